"""python -m services.referrals"""

from services.referrals.app import SPEC
from services.referrals.settings import ReferralsSettings
from shared.service import serve
from shared.settings import settings_from_environment

if __name__ == "__main__":
    serve(SPEC, settings_from_environment(ReferralsSettings))
