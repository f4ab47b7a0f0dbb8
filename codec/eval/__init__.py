"""Rate-distortion evaluation (`neurocodec eval`): neurocodec against classical codecs.

metrics  PSNR, luma PSNR, MS-SSIM (pytorch-msssim)
codecs   adapters: every codec as pixels -> bytes -> pixels, with its exact settings
sweep    evaluate_images, evaluate_video: the measuring process pool and aggregation
cache    the resumable JSON-lines cache of measured points
bd       Bjontegaard metrics and the BD table
report   results JSON / CSV / CompressAI files, published reference curves
plot     the RD plot
compare  encode_classical: a classical codec at a given file size (the web demo)
"""
