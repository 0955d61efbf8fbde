"""UniFusion core: frozen-VLM multi-layer conditioning (LAP), refiner and single-stream flow DiT.

Pure PyTorch + transformers; never imports ComfyUI. Heavy submodules are imported on use.
"""
__version__ = "0.1.0"
