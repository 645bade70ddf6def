"""Import a shop's history: Shopify's or WooCommerce's order export CSV as the contract's events, marked `imported`.

    python -m services.orders.importer shopify orders_export.csv [--customers customers_export.csv]
    python -m services.orders.importer woocommerce orders-export.csv --timezone Europe/Bratislava

exports.py reads the CSVs, history.py turns each order into events (or a reason to skip it), run.py
publishes them through the broker with publisher confirms and a checkpoint so a second run resumes.
"""
