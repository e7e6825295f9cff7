"""App hooks (``SIO_HOOKS_MODULE``) and the Table Storage history behind the replay API."""
