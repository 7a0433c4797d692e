"""transferscope.theory."""
