"""transferscope.analyses."""
