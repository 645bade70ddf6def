"""python -m services.loyalty"""

from services.loyalty.app import SPEC
from services.loyalty.settings import LoyaltySettings
from shared.service import serve

if __name__ == "__main__":
    serve(SPEC, LoyaltySettings())
