"""Builds the cffi kernel module at install time (``pip install ./plugins/arm_xnnpack``)."""

from setuptools import setup

setup(cffi_modules=["src/quantplug_arm_xnnpack/_ffi_build.py:ffi"])
