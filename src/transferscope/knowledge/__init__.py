"""transferscope.knowledge."""
