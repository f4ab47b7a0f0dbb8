"""The `neurocodec` command: argument wiring only, the logic lives in the packages it calls.

main      encode, decode, info, models, demo; the parser; errors as one line
evaluate  eval images|video (codec.eval)
train     train, train export, train record-kodak (codec.train)
"""
from codec.cli.main import build_parser, main

__all__ = ["main", "build_parser"]
