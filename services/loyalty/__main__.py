"""python -m services.loyalty"""

from services.loyalty.app import SPEC
from services.loyalty.settings import LoyaltySettings
from shared.service import serve
from shared.settings import settings_from_environment

if __name__ == "__main__":
    serve(SPEC, settings_from_environment(LoyaltySettings))
