"""Content-addressed artifact stores: one contract (``base``), a local folder and S3, chosen by URL
scheme in ``factory.open_store``."""
