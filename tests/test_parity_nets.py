"""Parity of the two networks (UNetModelSwin, VQModelTorch) against a kit's golden tensors.

Networks are built only from the kit's config.json, so any kit of the same family is checked.
"""
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_resshift.model import bicubic_up_packed
from napari_resshift.nets.autoencoder import VectorQuantizer, VQModelTorch
from napari_resshift.nets.unet import UNetModelSwin, Upsample, shifted_window_mask, timestep_embedding

TOL = 1e-4  # README section 2: UNet forward, autoencoder encode / decode


def _t(a):
    return torch.from_numpy(np.asarray(a))


def _err(a, b):
    return (a.detach().float() - _t(b).float()).abs().max().item()


def _load(module, kit, section):
    sd = torch.load(kit.path / kit.config[section]["ckpt_path"], map_location="cpu", weights_only=True)
    module.load_state_dict(sd, strict=True)
    return module.eval()


@pytest.fixture(scope="module")
def unet(kit):
    return _load(UNetModelSwin(**kit.config["model"]["params"]), kit, "model")


@pytest.fixture(scope="module")
def vq(kit):
    return _load(VQModelTorch(**kit.config["autoencoder"]["params"]), kit, "autoencoder")


def _cases(golden):
    return sorted({m.group(1) for k in golden if (m := re.match(r"(case\d+)_out$", k))})


def test_parity_shifted_window_masks(kit):
    golden = kit.npz("unet_forward")
    keys = [k for k in golden if k.startswith("mask_")]
    assert keys
    for key in keys:
        H, W, w, s = map(int, re.fullmatch(r"mask_h(\d+)_w(\d+)_ws(\d+)_sh(\d+)", key).groups())
        mask = shifted_window_mask(H, W, w, s)
        assert mask.dtype == torch.float32
        assert np.array_equal(mask.numpy(), golden[key]), key


def test_parity_timestep_embedding(kit, unet):
    golden = kit.npz("unet_forward")
    C = kit.config["model"]["params"]["model_channels"]
    for case in _cases(golden):
        sin = timestep_embedding(_t(golden[f"{case}_t"]), C)
        assert _err(sin, golden[f"{case}_temb_sin"]) <= 1e-6, case
        with torch.no_grad():
            assert _err(unet.time_embed(sin), golden[f"{case}_temb"]) <= 1e-5, case


def test_parity_unet_forward(kit, unet):
    golden = kit.npz("unet_forward")
    cases = _cases(golden)
    assert cases
    for case in cases:
        with torch.no_grad():
            out = unet(_t(golden[f"{case}_x"]), _t(golden[f"{case}_t"]), _t(golden[f"{case}_lq"]))
        assert out.shape == golden[f"{case}_out"].shape
        assert _err(out, golden[f"{case}_out"]) <= TOL, case


def test_parity_unet_stored_buffers(unet):
    for name, buf in unet.named_buffers():
        if name.endswith("attn_mask"):
            nw, n, _ = buf.shape
            w = int(round(n ** 0.5))
            ds = int(round(nw ** 0.5)) * w
            blk = unet.get_submodule(name.rsplit(".", 1)[0])
            assert torch.equal(buf, shifted_window_mask(ds, ds, w, blk.shift)), name


def test_parity_autoencoder_encode_and_codes(kit, vq):
    g = kit.npz("autoencoder")
    with torch.no_grad():
        z = vq.encode(_t(g["x"]))
        assert _err(z, g["z"]) <= TOL
        z_q, idx = vq.quantize_latent(z)
    sure = g["code_margin"] >= 1e-4  # README 2: below this, float32 drift may flip a code
    assert sure.any()
    assert np.array_equal(idx.numpy()[sure], g["code_idx"][sure])
    assert _err(z_q, g["z_q"]) <= TOL


def test_parity_autoencoder_decode(kit, vq):
    g = kit.npz("autoencoder")
    with torch.no_grad():
        assert _err(vq.decode(_t(g["z"])), g["dec_quant"]) <= TOL
        assert _err(vq.decode(_t(g["z_q"]), quantize=False), g["dec_quant"]) <= TOL
        assert _err(vq.decode(_t(g["z"]), quantize=False), g["dec_noquant"]) <= TOL
        assert _err(vq.decode(_t(g["z"])), g["decode_first_stage_of_z"]) <= TOL


def test_parity_bicubic_and_lq_encoding(kit, vq):
    g = kit.npz("autoencoder")
    y_up = F.interpolate(_t(g["y"]), scale_factor=4, mode="bicubic")
    assert _err(y_up, g["y_up"]) <= 1e-6
    assert _err(bicubic_up_packed(_t(g["y"]), 4), F.pixel_unshuffle(_t(g["y_up"]), 4)) <= 1e-6
    with torch.no_grad():
        assert _err(vq.encode(y_up), g["z_y"]) <= TOL


def test_quantizer_ties_and_gradient():
    q = VectorQuantizer(4, 2)
    with torch.no_grad():
        q.embedding.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]).t().reshape(1, 2, 1, 3).requires_grad_(True)
    z_q, idx = q(z)
    assert idx.flatten().tolist() == [0, 1, 0]  # first index on ties
    z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # straight-through


# ---- architecture-generic checks on a small random network of another shape --------------------

TINY_UNET = dict(image_size=16, in_channels=3, model_channels=32, out_channels=3, attention_resolutions=[16, 4],
                 dropout=0, channel_mult=[1, 1, 2], num_res_blocks=[2, 1, 1], conv_resample=True, dims=2,
                 use_fp16=False, num_head_channels=32, use_scale_shift_norm=True, resblock_updown=False,
                 swin_depth=3, swin_embed_dim=64, window_size=4, mlp_ratio=2, cond_lq=True, lq_size=16)
TINY_VQ = dict(embed_dim=3, n_embed=16, ddconfig=dict(double_z=False, z_channels=3, resolution=64, in_channels=3,
                                                       out_ch=3, ch=32, ch_mult=[1, 2, 2], num_res_blocks=2,
                                                       attn_resolutions=[], dropout=0.0))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    unet = UNetModelSwin(**TINY_UNET).eval()
    vq = VQModelTorch(**TINY_VQ).eval()
    for p in list(unet.parameters()) + list(vq.parameters()):  # no zero-initialised path
        p.data.normal_(0, 0.05) if p.dim() > 1 else p.data.uniform_(-0.2, 0.2)
    return unet, vq


def _inputs(h, w, b=2):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(b, 3, h, w, generator=g), torch.tensor([0, 3][:b]), torch.rand(b, 3, h, w, generator=g) * 2 - 1)


def test_tiny_shapes_and_keys(tiny):
    unet, vq = tiny
    x, t, lq = _inputs(16, 32)  # non-square, larger than image_size
    with torch.no_grad():
        out = unet(x, t, lq)
        assert out.shape == x.shape and torch.isfinite(out).all()
        lq_small = F.interpolate(lq, scale_factor=0.5, mode="bilinear")
        assert unet(x, t, lq_small).shape == x.shape  # lq resized to x
        img = torch.rand(1, 3, 32, 48) * 2 - 1
        z = vq.encode(img)
        assert z.shape == (1, 3, 8, 12)
        assert vq.decode(z).shape == img.shape
    sd = unet.state_dict()
    assert sum(k.endswith("relative_position_index") for k in sd) == 5 * 3  # 5 Swin layers x depth 3
    # shifted blocks exist only where ds > window (ds 16 -> w 4, s 2; ds 4 -> w 4, no shift)
    assert {tuple(v.shape) for k, v in sd.items() if k.endswith("attn_mask")} == {(16, 16, 16)}
    UNetModelSwin(**TINY_UNET).load_state_dict(sd, strict=True)


def test_tiny_rejects_unsupported_options():
    for key, value in [("dims", 3), ("resblock_updown", True), ("use_scale_shift_norm", False),
                       ("conv_resample", False), ("cond_lq", False)]:
        with pytest.raises(ValueError, match=key):
            UNetModelSwin(**{**TINY_UNET, key: value})
    with pytest.raises(ValueError, match="window"):
        with torch.no_grad():
            UNetModelSwin(**TINY_UNET).eval()(*_inputs(16, 20))


def test_tiny_bf16_autocast_close_to_fp32(tiny):
    unet, vq = tiny
    x, t, lq = _inputs(16, 32)
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ref, zref, dref = unet(x, t, lq), vq.encode(img), vq.decode(vq.encode(img), quantize=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, z = unet(x, t, lq), vq.encode(img)
            dec = vq.decode(zref, quantize=False)
    assert out.dtype == torch.float32  # cast back to the input dtype
    for a, b in [(out, ref), (z, zref), (dec, dref)]:
        assert torch.isfinite(a).all()
        assert (a.float() - b).abs().max() <= 0.05 * b.abs().max() + 1e-3


def test_tiny_channels_last_matches(tiny):
    unet, vq = tiny
    x, t, lq = _inputs(16, 32)
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ref, zref, dref = unet(x, t, lq), vq.encode(img), vq.decode(vq.encode(img))
        cl = torch.channels_last
        unet.to(memory_format=cl)
        vq.to(memory_format=cl)
        try:
            out = unet(x.to(memory_format=cl), t, lq.to(memory_format=cl))
            z = vq.encode(img.to(memory_format=cl))
            dec = vq.decode(z)
        finally:
            unet.to(memory_format=torch.contiguous_format)
            vq.to(memory_format=torch.contiguous_format)
    assert (out - ref).abs().max() <= 1e-5
    assert (z - zref).abs().max() <= 1e-5
    assert (dec - dref).abs().max() <= 1e-4


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_packed_bicubic_equals_bicubic_then_pixel_unshuffle(scale):
    for shape in [(1, 3, 1, 1), (2, 3, 5, 7), (1, 1, 33, 20)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
        ref = F.pixel_unshuffle(F.interpolate(x, scale_factor=scale, mode="bicubic"), scale)
        assert _err(bicubic_up_packed(x, scale), ref) <= 1e-5


def test_channels_last_upsample_is_the_same_maths_forward_and_backward():
    torch.manual_seed(0)
    up = Upsample(8)
    x = torch.randn(2, 8, 7, 5, requires_grad=True)
    grads = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        up.zero_grad()
        xi = x.detach().contiguous(memory_format=memory_format).requires_grad_()
        out = up(xi)
        out.square().sum().backward()
        grads.append((out.detach(), up.conv.weight.grad.clone(), up.conv.bias.grad.clone(), xi.grad))
    assert out.is_contiguous(memory_format=torch.channels_last) and out.shape == (2, 8, 14, 10)
    for ref, cl in zip(grads[0], grads[1]):
        assert (cl - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_tiny_backward_reaches_all_parameters(tiny):
    unet, _ = tiny
    x, t, lq = _inputs(16, 16)
    unet.zero_grad()
    unet(x, t, lq).square().mean().backward()
    missing = [n for n, p in unet.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    unet.zero_grad()
    assert not missing
