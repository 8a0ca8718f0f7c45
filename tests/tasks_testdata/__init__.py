"""Synthetic (invented) data in the official SuperGLUE / GLUE file formats for tests."""
