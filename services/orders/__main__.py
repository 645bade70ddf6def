"""python -m services.orders"""

from services.orders.app import SPEC
from services.orders.settings import OrdersSettings
from shared.service import serve
from shared.settings import settings_from_environment

if __name__ == "__main__":
    serve(SPEC, settings_from_environment(OrdersSettings))
