"""Training the image models (`neurocodec train`) and shipping their weights.

loop       train(): the resumable loop (DDP with torchrun), logging, validation on real files
data       RandomPatches: training patches that depend only on (seed, step, index)
warmstart  init_from(): start from other weights (copied, widened, carried across families)
export     export_weights(), write_weights(), record_kodak(): safetensors + manifest entries
"""
