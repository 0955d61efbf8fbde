"""What the Layer Inspector draws (no ComfyUI needed): the pooler's per-layer weights as bars and,
for a prompt, LAP's attention over the layer axis as one heatmap per block. PIL only.

Legend: N real tokens, H heads, Lv tapped layers.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

BG, FG, BAR, NEG = (255, 255, 255), (20, 20, 20), (52, 101, 164), (204, 0, 0)


def draw_inspector(weights, layers, attention=(), title="") -> torch.Tensor:
    """-> ComfyUI IMAGE (1, H, W, 3): bars of ``weights`` (Lv,) labelled by ``layers``, then heatmaps."""
    font = ImageFont.load_default()
    weights = [float(w) for w in weights]
    n = len(weights)
    bar_w, gap, left, top, plot_h = 36, 8, 48, 40, 200
    heat = 28 * n + 40
    width = max(left + n * (bar_w + gap) + 20, 20 + len(attention) * (heat + 20), 360)
    height = top + plot_h + 50 + (heat + 40 if attention else 0)
    img = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), title or "LAP pooling weight per VLM layer", fill=FG, font=font)
    scale = max(max(abs(w) for w in weights), 1e-8) if weights else 1.0
    base = top + plot_h // 2 if min(weights, default=0) < 0 else top + plot_h
    draw.line((left - 4, base, left + n * (bar_w + gap), base), fill=FG)
    for i, (w, layer) in enumerate(zip(weights, layers)):
        x0 = left + i * (bar_w + gap)
        h = int(abs(w) / scale * (plot_h // 2 if base != top + plot_h else plot_h))
        y0, y1 = (base - h, base) if w >= 0 else (base, base + h)
        draw.rectangle((x0, y0, x0 + bar_w, y1), fill=BAR if w >= 0 else NEG)
        draw.text((x0 + 2, top + plot_h + 8), f"L{layer}", fill=FG, font=font)
        draw.text((x0 + 2, top + plot_h + 22), f"{w:.2f}", fill=FG, font=font)
    y = top + plot_h + 50
    for b, att in enumerate(attention):
        _heatmap(draw, att, layers, 20 + b * (heat + 20), y, f"block {b + 1}: attention over layers", font)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]  # (1, H, W, 3)


def _heatmap(draw, att: torch.Tensor, layers, x, y, label, font):
    cell = 28
    draw.text((x, y), label, fill=FG, font=font)
    att = att.float()
    peak = float(att.max()) or 1.0
    for i in range(att.shape[0]):
        draw.text((x, y + 30 + i * cell + 8), f"L{layers[i]}", fill=FG, font=font)
        for j in range(att.shape[1]):
            v = int(255 * (1 - float(att[i, j]) / peak))
            x0, y0 = x + 30 + j * cell, y + 30 + i * cell
            draw.rectangle((x0, y0, x0 + cell - 2, y0 + cell - 2), fill=(v, v, 255))
