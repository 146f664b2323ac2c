"""Plugin version: embedded into the compiled kernels and checked at import."""

# 0.2: conv weights with groups == 1 are packed with each kernel row padded to 4 bytes (indirect
# conv kernel reads the input in place), so models saved by 0.1 must be re-quantized; quantplug.load
# refuses them by the major.minor rule and names the version to install.
__version__ = "0.2.0"
