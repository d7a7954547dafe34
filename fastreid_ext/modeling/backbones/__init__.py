"""Registered backbones of fastreid_ext (registered by the imports in ``fastreid_ext/modeling/__init__.py``)."""
