"""The demo inbox page (``/demo/``): sign in as a demo user and watch notifications arrive live."""
