"""The ``wanlora`` command line: a thin door onto ``registry``."""
