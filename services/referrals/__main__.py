"""python -m services.referrals"""

from services.referrals.app import SPEC
from services.referrals.settings import ReferralsSettings
from shared.service import serve

if __name__ == "__main__":
    serve(SPEC, ReferralsSettings())
