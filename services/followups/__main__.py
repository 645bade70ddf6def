"""python -m services.followups"""

from services.followups.app import SPEC
from services.followups.settings import FollowupsSettings
from shared.service import serve
from shared.settings import settings_from_environment

if __name__ == "__main__":
    serve(SPEC, settings_from_environment(FollowupsSettings))
