"""neurocodec's web demo (Gradio), built only on the public `codec` API.

Start it with `neurocodec demo` or ``gui.launch()``; ``gui.build_app(folder)`` gives the
gr.Blocks without serving it.
"""
from gui.app import build_app, launch

__all__ = ["build_app", "launch"]
