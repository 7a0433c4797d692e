"""transferscope: what does pre-training transfer to a downstream task, and why does it help?"""

__version__ = "0.1.0"
