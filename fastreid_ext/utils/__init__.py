"""Utilities (visualization, ...) of fastreid_ext."""
