"""python -m services.followups"""

from services.followups.app import SPEC
from services.followups.settings import FollowupsSettings
from shared.service import serve

if __name__ == "__main__":
    serve(SPEC, FollowupsSettings())
