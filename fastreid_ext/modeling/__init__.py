"""Registered meta-architectures, heads and backbones of fastreid_ext (one module per method)."""
