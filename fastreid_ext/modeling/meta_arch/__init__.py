"""Registered meta-architectures of fastreid_ext, one module per method (registered by the imports in
``fastreid_ext/modeling/__init__.py``)."""
