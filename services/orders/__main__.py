"""python -m services.orders"""

from services.orders.app import SPEC
from services.orders.settings import OrdersSettings
from shared.service import serve

if __name__ == "__main__":
    serve(SPEC, OrdersSettings())
