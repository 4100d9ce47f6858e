"""SAM's box-prompt mask decoder written for CPU inference graphs: the same weights and the same maths, laid out
so that every large tensor stays token-major (channels innermost) from the image embedding to the mask.

Why: in SAM's own code the 64x64 image tokens are transposed again and again, into and out of attention heads,
into NCHW for the upscaling convolutions and back for the last product with the mask token. On one CPU core
those copies and OpenVINO's layout reorders took about a third of the decoder's time (per-layer profile in
``docs/speed.md``). Here:

* Attention between the few prompt tokens and the 4096 image tokens never splits the image side into heads.
  The prompt side is laid out block-diagonally, one row block a head (``H x T`` rows, ``T`` tokens), so each
  head's scores and values come from one plain matrix product with the image tokens.
* The two stride-2 transposed convolutions (kernel 2: no overlap) are per-pixel linear maps to 2x2 sub-pixels.
  They run as matrix products on token rows, the LayerNorm2d over channels is a LayerNorm of the last axis, and
  the sub-pixels are put in place once, on the one-channel mask at the end.
* Only the mask of the first mask token (SAM's ``multimask_output=False``) and its IoU are computed.

:func:`models.box_prompt_decode` is the reference; ``tests`` compare the two on real embeddings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Part of the cached OpenVINO model's name: raise it when the graph below changes.
GRAPH_VERSION = 3


class TokenMajorBoxDecoder(nn.Module):
    """``(embeddings (B, 256, 64, 64), boxes (B, 1, 4) in model pixels) -> (logits (B, 1, 256, 256), IoU (B, 1))``
    for SAM-style ``net`` (``prompt_encoder`` and ``mask_decoder`` with a two-way transformer)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = net.prompt_encoder
        self.mask_decoder = net.mask_decoder
        decoder = self.mask_decoder
        with torch.no_grad():
            pe = self.prompt_encoder.get_dense_pe()  # (1, C, h, w)
            self.grid = tuple(int(v) for v in pe.shape[-2:])
            first, norm, _, second, _ = decoder.output_upscaling
            constants = {
                "image_pe": pe.flatten(2).transpose(1, 2),  # (1, N, C)
                "no_mask": self.prompt_encoder.no_mask_embed.weight.reshape(1, 1, -1),
                "output_tokens": torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)[None],
                "norm_weight": norm.weight, "norm_bias": norm.bias,
            }
            constants["first_weight"], constants["first_bias"] = _subpixel_linear(first)
            constants["second_weight"], constants["second_bias"] = _subpixel_linear(second)
            for name, value in constants.items():
                self.register_buffer(name, value.detach().clone().contiguous(), persistent=False)
        self.norm_eps = float(norm.eps)

    def forward(self, embeddings: torch.Tensor, boxes: torch.Tensor):
        decoder = self.mask_decoder
        transformer = decoder.transformer
        sparse, _ = self.prompt_encoder(points=None, boxes=boxes, masks=None)
        batch = embeddings.shape[0]
        tokens = torch.cat((self.output_tokens.expand(batch, -1, -1), sparse), dim=1)  # (B, T, C)
        keys = embeddings.flatten(2).transpose(1, 2) + self.no_mask  # (B, N, C): SAM adds the no-mask embedding
        pe = self.image_pe

        queries = tokens
        for layer in transformer.layers:
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = layer.norm1(queries)
            keys_pe = keys + pe  # both cross attentions of the block see the same image tokens
            queries = layer.norm2(queries + _tokens_to_image(layer.cross_attn_token_to_image, queries + tokens,
                                                             keys_pe, keys))
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = layer.norm4(keys + _image_to_tokens(layer.cross_attn_image_to_token, keys_pe,
                                                       queries + tokens, queries))
        queries = transformer.norm_final_attn(queries + _tokens_to_image(
            transformer.final_attn_token_to_image, queries + tokens, keys + pe, keys))

        # Upscaling: each image token -> 2x2 sub-pixels -> 2x2 sub-pixels each, channels last throughout.
        up = keys @ self.first_weight + self.first_bias  # (B, N, 4 * C1)
        channels = self.norm_weight.shape[0]
        up = up.reshape(batch, -1, channels)
        up = F.gelu(F.layer_norm(up, (channels,), self.norm_weight, self.norm_bias, self.norm_eps))
        up = F.gelu(up @ self.second_weight + self.second_bias)  # (B, 4N, 4 * C2)
        hyper = decoder.output_hypernetworks_mlps[0](queries[:, 1, :])  # (B, C2)
        up = up.reshape(batch, -1, hyper.shape[-1])  # (B, 16N, C2)
        mask = (up @ hyper[:, :, None]).reshape(batch, self.grid[0], self.grid[1], 2, 2, 2, 2)
        # (row, col, first sub-row, first sub-col, second sub-row, second sub-col) -> pixel rows, pixel columns
        mask = mask.permute(0, 1, 3, 5, 2, 4, 6).reshape(batch, 1, 4 * self.grid[0], 4 * self.grid[1])
        iou = decoder.iou_prediction_head(queries[:, 0, :])[:, :1]
        return mask, iou


def _subpixel_linear(conv: nn.ConvTranspose2d):
    """A kernel-2, stride-2 transposed convolution as ``(C_in, 4 * C_out)`` weights and a ``(4 * C_out,)`` bias:
    column ``(2 * sub_row + sub_col) * C_out + o`` gives channel ``o`` of that sub-pixel."""
    if tuple(conv.kernel_size) != (2, 2) or tuple(conv.stride) != (2, 2) or tuple(conv.padding) != (0, 0):
        raise ValueError("only kernel-2, stride-2 transposed convolutions without padding are sub-pixel linear")
    weight = conv.weight.detach()  # (C_in, C_out, 2, 2)
    c_in, c_out = weight.shape[:2]
    as_linear = weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out).contiguous()
    bias = conv.bias.detach().repeat(4)
    return as_linear, bias


def _head_mask(attention: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """(H, 1, D) with 1 where column d of the projected dimension D belongs to head h."""
    heads, dim = attention.num_heads, attention.internal_dim
    per_head = dim // heads
    rows = torch.arange(heads, device=like.device)[:, None]
    columns = torch.arange(dim, device=like.device)[None, :] // per_head
    return (rows == columns).to(like.dtype)[:, None, :]


def _block_diagonal(projected: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, H * T, D): row block h holds the tokens restricted to head h's columns."""
    batch, _, dim = projected.shape
    return (projected[:, None, :, :] * mask[None]).reshape(batch, -1, dim)


def _projected(attention: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """SAM ``Attention``'s input projections, its head mask (:func:`_head_mask`) and its score scale."""
    query, key, value = attention.q_proj(q), attention.k_proj(k), attention.v_proj(v)
    scale = 1.0 / math.sqrt(attention.internal_dim // attention.num_heads)
    return query, key, value, _head_mask(attention, query), scale


def _tokens_to_image(attention: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SAM's ``Attention(q=tokens, k=image, v=image)`` without splitting the image tokens into heads."""
    query, key, value, mask, scale = _projected(attention, q, k, v)  # (B, T, D), (B, N, D), (B, N, D)
    scores = torch.matmul(_block_diagonal(query, mask), key.transpose(1, 2)) * scale  # (B, H*T, N)
    out = torch.matmul(torch.softmax(scores, dim=-1), value)  # (B, H*T, D)
    batch, count = q.shape[:2]
    out = (out.reshape(batch, attention.num_heads, count, -1) * mask[None]).sum(dim=1)  # each head's own columns
    return attention.out_proj(out)


def _image_to_tokens(attention: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SAM's ``Attention(q=image, k=tokens, v=tokens)`` without splitting the image tokens into heads."""
    query, key, value, mask, scale = _projected(attention, q, k, v)  # (B, N, D), (B, T, D), (B, T, D)
    batch, count = k.shape[:2]
    heads = attention.num_heads
    scores = torch.matmul(query, _block_diagonal(key, mask).transpose(1, 2)) * scale  # (B, N, H*T)
    probabilities = torch.softmax(scores.reshape(batch, -1, heads, count), dim=-1).reshape(batch, -1, heads * count)
    return attention.out_proj(torch.matmul(probabilities, _block_diagonal(value, mask)))  # (B, N, D)
