"""Esper: morphogenetic neural networks that grow seeds during training, steered by Tamiyo."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`esper.wrap` / `esper.load_wrapped`, imported on first use: `import esper` (and so every `esper.leyline`
    import, e.g. in a torch-free client) stays free of torch."""
    if name in ("wrap", "load_wrapped"):
        from esper.kasmina.wrap import load_wrapped, wrap

        return {"wrap": wrap, "load_wrapped": load_wrapped}[name]
    raise AttributeError(f"module 'esper' has no attribute {name!r}")
