"""Placeholder for SimpleITK on a machine without it: importing torchio works, any use fails."""


class _MissingMeta(type):
    def __getattr__(cls, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _missing(f"{cls.__name__}.{attr}")


def _missing(name):
    def fail(*args, **kwargs):
        raise RuntimeError(f"SimpleITK is not installed here ({name} was used)")

    return _MissingMeta(name, (), {"__new__": fail, "__init_subclass__": classmethod(lambda c: None)})


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _missing(name)
