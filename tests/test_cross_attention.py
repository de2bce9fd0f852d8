"""Cross-attention with a key padding mask, LDM's transformer block in the U-Net, the text encoder
tau and the conditioned U-Net (Rombach et al. 2022, section 3.3).  Float64 and tiny sizes."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from minidiff import samplers, schedules
from minidiff.guidance import classifier_free_guidance, drop_labels
from minidiff.torch.attention import MultiHeadAttention, TransformerBlock, attention, key_padding_bias, position_code
from minidiff.torch.conditioning import ClassTokenEncoder, ConditionedUNet
from minidiff.torch.text import PAD_ID, TextConfig, TextEncoder
from minidiff.torch.unet import UNet, UNetConfig

torch.set_default_dtype(torch.float32)


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _perturb_(module, seed=0, scale=0.3):
    """Move every weight off its (near-zero) initialisation, so each branch really contributes."""
    g = _g(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def test_key_padding_bias_values_and_shape():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    b = key_padding_bias(mask, torch.float64)
    assert b.shape == (2, 1, 1, 3) and b.dtype == torch.float64
    assert torch.equal(b[:, 0, 0] == 0, mask) and torch.isinf(b[~mask[:, None, None, :]]).all()
    with pytest.raises(ValueError, match="no key"):
        key_padding_bias(torch.tensor([[False, False]]))
    with pytest.raises(ValueError, match="bool"):
        key_padding_bias(torch.tensor([[1, 0]]))


def test_masked_attention_equals_attention_on_the_real_keys_only():
    g = _g(1)
    q = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    k = torch.randn(2, 3, 6, 4, generator=g, dtype=torch.float64)
    v = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])       # unequal lengths: 4 and 6 real keys
    out = attention(q, k, v, mask)
    torch.testing.assert_close(out[:1], attention(q[:1], k[:1, :, :4], v[:1, :, :4]))
    torch.testing.assert_close(out[1:], attention(q[1:], k[1:], v[1:]))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :]))


def test_cross_attention_ignores_the_padding_and_takes_its_keys_from_the_context():
    torch.manual_seed(0)
    mha = _perturb_(MultiHeadAttention(8, 2, context_dim=5).double())
    g = _g(2)
    x = torch.randn(2, 9, 8, generator=g, dtype=torch.float64)
    ctx = torch.randn(2, 4, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
    out = mha(x, ctx, mask)
    ctx2 = ctx.clone()
    ctx2[~mask] = 100 * torch.randn(int((~mask).sum()), 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(mha(x, ctx2, mask), out)              # padding changes nothing
    ctx3 = ctx.clone()
    ctx3[0, 0] += 1.0                                                # a real token of image 0 changes only image 0
    out3 = mha(x, ctx3, mask)
    assert not torch.allclose(out3[0], out[0]) and torch.equal(out3[1], out[1])
    mha.store_weights = True
    torch.testing.assert_close(mha(x, ctx, mask), out)               # the explicit path = the fused kernel
    w = mha.weights                                                  # (B, heads, L, S)
    assert w.shape == (2, 2, 9, 4)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 9, dtype=torch.float64))
    assert (w[~mask[:, None, None, :].expand_as(w)] == 0).all()
    with pytest.raises(ValueError, match="context_mask"):
        mha(x, ctx, mask[:, :3])


def test_transformer_block_starts_as_the_identity_and_every_weight_gets_a_gradient():
    torch.manual_seed(0)
    block = TransformerBlock(8, context_dim=6, num_heads=2, groups=4).double()
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)                 # H != W
    ctx = torch.randn(2, 4, 6, dtype=torch.float64)
    mask = torch.tensor([[True, False, False, False], [True, True, True, True]])
    out = block(x, ctx, mask)
    assert out.shape == x.shape
    assert (out - x).abs().max() < 1e-3 * x.abs().max()              # zero-initialised projection back
    _perturb_(block, 3)
    (block(x, ctx, mask) ** 2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    with pytest.raises(ValueError, match="context"):
        block(x, None)



def test_position_code_is_the_sinusoidal_embedding_of_row_and_column():
    H, W, d = 3, 5, 12                                               # H != W, d / 4 = 3 frequencies
    p = position_code(H, W, d, dtype=torch.float64)
    assert p.shape == (H * W, d) and p.dtype == torch.float64
    omega = 10000.0 ** (-np.arange(3) / 3)
    for i, j in [(0, 0), (2, 1), (1, 4)]:
        row, col = i * omega, j * omega
        want = np.concatenate([np.cos(row), np.sin(row), np.cos(col), np.sin(col)])
        np.testing.assert_allclose(p[i * W + j].numpy(), want, rtol=0, atol=1e-12)   # row-major tokens
    assert len({tuple(np.round(r, 9)) for r in p.numpy()}) == H * W   # every position its own code
    with pytest.raises(ValueError, match="divisible by 4"):
        position_code(2, 2, 6)


def test_a_transformer_block_with_the_position_code_tells_positions_apart():
    # A feature map constant over space gives H*W identical tokens: without a position code the block
    # (1x1 projections, attention over the tokens) must return it constant; with the code it must not.
    x = torch.randn(2, 8, 1, 1, dtype=torch.float64).expand(2, 8, 3, 4).contiguous()
    ctx = torch.randn(2, 3, 6, dtype=torch.float64)
    for position in (False, True):
        torch.manual_seed(0)
        block = _perturb_(TransformerBlock(8, context_dim=6, num_heads=2, groups=4, position=position).double(), 5)
        out = block(x, ctx)
        spread = (out - out.mean(dim=(2, 3), keepdim=True)).abs().max()
        assert (spread > 1e-3) if position else (spread < 1e-10), (position, spread)
    (out ** 2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


def test_position_embedding_is_a_checked_unet_option():
    assert UNetConfig().position_embedding is False                  # older checkpoints: no code
    cfg = dict(image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
               num_heads=2, groups=4)
    with pytest.raises(ValueError, match="needs context_dim"):
        UNetConfig(**cfg, position_embedding=True)
    with pytest.raises(ValueError, match="True or False"):
        UNetConfig(**cfg, context_dim=6, position_embedding=1)
    with pytest.raises(ValueError, match="divisible by 4"):
        UNetConfig(**{**cfg, "base_channels": 6, "groups": 2, "attention_resolutions": (8,)}, context_dim=6,
                   position_embedding=True)
    net = UNet(UNetConfig(**cfg, context_dim=6, position_embedding=True))
    assert "position code" in net.summary()
    assert net(torch.randn(2, 1, 8, 8), torch.rand(2), context=torch.randn(2, 3, 6)).shape == (2, 1, 8, 8)

def unet_cfg(**kw):
    cfg = dict(in_channels=1, image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
               attention_resolutions=(4,), num_heads=2, groups=4, dropout=0.0, context_dim=6)
    cfg.update(kw)
    return UNetConfig(**cfg)


def test_unet_with_context_dim_uses_the_context_and_checks_it():
    torch.manual_seed(0)
    net = _perturb_(UNet(unet_cfg()).double(), 4)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    ctx = torch.randn(3, 5, 6, dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 2:] = False
    out = net(x, torch.tensor([1.0, 2.0, 3.0]), context=ctx, context_mask=mask)
    assert out.shape == x.shape
    ctx2 = ctx.clone()
    ctx2[1] += 0.5
    out2 = net(x, torch.tensor([1.0, 2.0, 3.0]), context=ctx2, context_mask=mask)
    assert not torch.allclose(out2[1], out[1]) and torch.equal(out2[0], out[0]) and torch.equal(out2[2], out[2])
    with pytest.raises(ValueError, match="context .* is required"):
        net(x, 1.0)
    with pytest.raises(ValueError, match="context must have shape"):
        net(x, 1.0, context=torch.randn(3, 5, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="no cross-attention"):
        UNet(unet_cfg(context_dim=None))(x.float(), 1.0, context=ctx.float())
    with pytest.raises(ValueError, match="context_dim needs attention_resolutions"):
        unet_cfg(attention_resolutions=())
    with pytest.raises(ValueError, match="context_dim"):
        unet_cfg(context_dim=0)


def test_pooled_context_is_the_masked_mean_and_enters_the_time_embedding():
    from minidiff.torch.unet import pooled_context
    ctx = torch.randn(3, 5, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 1, 0]], dtype=torch.bool)
    pooled = pooled_context(ctx, mask)
    assert torch.allclose(pooled[0], ctx[0, :2].mean(0)) and torch.allclose(pooled[1], ctx[1].mean(0))
    assert torch.equal(pooled[2], ctx[2, 3]) and torch.allclose(pooled_context(ctx), ctx.mean(1))
    assert torch.equal(pooled_context(ctx, torch.zeros(3, 5, dtype=torch.bool)), torch.zeros(3, 6, dtype=torch.float64))
    # a padded token changes nothing, with or without the pooled path; a real one changes the output
    torch.manual_seed(0)
    net = _perturb_(UNet(unet_cfg(pooled_context=True)).double(), 4)
    assert net.context_emb is not None and "pooled" in net.summary()
    x, t = torch.randn(3, 1, 8, 8, dtype=torch.float64), torch.tensor([0.5, 1.0, 2.0])
    out = net(x, t, context=ctx, context_mask=mask)
    ctx2 = ctx.clone()
    ctx2[0, 3] += 10.0
    assert torch.equal(net(x, t, context=ctx2, context_mask=mask), out)
    ctx2[0, 1] += 0.5
    assert not torch.allclose(net(x, t, context=ctx2, context_mask=mask)[0], out[0])
    # the pooled path learns
    loss = net(x, t, context=ctx, context_mask=mask).square().sum()
    loss.backward()
    assert net.context_emb.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="pooled_context needs context_dim"):
        unet_cfg(context_dim=None, pooled_context=True)
    with pytest.raises(ValueError, match="pooled_context must be True or False"):
        unet_cfg(pooled_context=1)


def text_encoder(**kw):
    torch.manual_seed(0)
    return TextEncoder(TextConfig(**{"vocab_size": 11, "context_length": 6, "width": 6, "layers": 2, "heads": 2,
                                     **kw})).double()


def test_text_encoder_masks_padding_and_is_order_aware():
    enc = _perturb_(text_encoder(), 5, 0.1)
    ids = torch.tensor([[2, 5, 7, 3, PAD_ID, PAD_ID], [2, 7, 5, 3, PAD_ID, PAD_ID]])
    tokens, mask = enc(ids)
    assert tokens.shape == (2, 6, 6) and torch.equal(mask, ids != PAD_ID)
    with torch.no_grad():
        enc.token_emb.weight[PAD_ID] += 10.0                           # what the padding holds does not matter
    tokens2, _ = enc(ids)
    torch.testing.assert_close(tokens2[mask], tokens[mask])
    pooled = TextEncoder.pooled(tokens, mask)
    assert pooled.shape == (2, 6) and not torch.allclose(pooled[0], pooled[1])   # word order matters
    with pytest.raises(ValueError, match="vocab_size"):
        enc(torch.tensor([[2, 11, 3, 0, 0, 0]]))
    with pytest.raises(ValueError, match="context_length"):
        enc(torch.tensor([[2, 3, 0]]))
    with pytest.raises(ValueError, match="heads"):
        TextConfig(width=6, heads=4)


def test_conditioned_unet_samples_with_guidance_on_the_empty_caption():
    """The text condition travels as a keyword through DDIM and classifier-free guidance, whose
    null is the empty caption's ids [BOS, EOS, PAD, ...], dropped into a batch by drop_labels."""
    torch.manual_seed(0)
    net = _perturb_(ConditionedUNet(unet_cfg(), text_encoder(), "tokens").double(), 6, 0.05)
    empty = torch.tensor([2, 3, 0, 0, 0, 0])
    ids = torch.tensor([[2, 5, 7, 3, 0, 0], [2, 9, 3, 0, 0, 0]])
    dropped = drop_labels(ids, 0.5, empty, np.random.default_rng(0))
    assert all(torch.equal(r, i) or torch.equal(r, empty) for r, i in zip(dropped, ids))
    alpha_bar = schedules.alpha_bars(schedules.linear_betas(50))
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    ts = samplers.ddim_timesteps(50, 4)
    plain = samplers.ddim_sample(net, x, alpha_bar, ts, tokens=ids)
    w0 = samplers.ddim_sample(classifier_free_guidance(net, 0.0, key="tokens", null=empty), x, alpha_bar, ts,
                              tokens=ids)
    torch.testing.assert_close(w0, plain)                              # w = 0: the conditional model
    uncond = samplers.ddim_sample(net, x, alpha_bar, ts, tokens=empty.expand(2, 6))
    wm1 = samplers.ddim_sample(classifier_free_guidance(net, -1.0, key="tokens", null=empty), x, alpha_bar, ts,
                               tokens=ids)
    torch.testing.assert_close(wm1, uncond)                            # w = -1: the unconditional one
    assert not torch.allclose(plain, uncond)
    with pytest.raises(ValueError, match="tokens"):
        net(x, torch.tensor([1, 2]))


def test_cross_attention_maps_are_distributions_over_the_real_tokens():
    torch.manual_seed(0)
    net = _perturb_(ConditionedUNet(unet_cfg(), text_encoder(), "tokens").double(), 7, 0.05)
    ids = torch.tensor([[2, 5, 3, 0, 0, 0], [2, 9, 4, 6, 3, 0]])
    mods = net.cross_attention_maps()
    net(torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([3, 4]), tokens=ids)
    assert mods and all(m.weights is not None for m in mods)
    for m in mods:
        w = m.weights                                                  # (B, heads, H*W, S)
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:3], dtype=torch.float64))
        assert (w[0, ..., 3:] == 0).all() and (w[1, ..., 5:] == 0).all()
    net.cross_attention_maps(False)
    assert all(m.weights is None and not m.store_weights for m in mods)


def test_class_token_encoder_through_cross_attention():
    torch.manual_seed(0)
    enc = ClassTokenEncoder(num_classes=3, width=6).double()
    net = _perturb_(ConditionedUNet(unet_cfg(), enc, "class_labels").double(), 8, 0.05)
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    out = net(x, torch.tensor([1, 2, 3, 4]), class_labels=torch.tensor([0, 1, 2, enc.null]))
    assert out.shape == x.shape
    with pytest.raises(ValueError, match=r"class labels must be integers in \[0, 3\]"):
        net(x, 1, class_labels=torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="context_dim"):
        ConditionedUNet(unet_cfg(context_dim=8), enc, "class_labels")


# ----------------------------------------------------------------------------------------------
# condition='class': the trainer's path for tau of classes (the label as one cross-attention token).

def _class_token_cfg(**kw):
    from minidiff.torch.train import ImageConfig

    return ImageConfig.from_preset("tiny", **{"dataset": "fashion-mnist", "condition": "class", "limit": 64,
                                              "steps": 3, "ckpt_every": 1, "sample_every": 0, **kw})


def test_a_class_token_model_takes_its_label_through_cross_attention_only(tmp_path):
    import dataclasses

    from minidiff.torch.sampling import sample_images
    from minidiff.torch.train import build_network, model_from_checkpoint, train_images

    cfg = _class_token_cfg().validate()
    assert cfg.class_conditional and cfg.unet.num_classes == 10
    assert cfg.unet.context_dim and cfg.unet.attention_resolutions and not cfg.unet.pooled_context
    net = build_network(cfg)
    assert isinstance(net, ConditionedUNet) and isinstance(net.encoder, ClassTokenEncoder)
    assert net.unet.class_emb is None and net.unet.context_emb is None  # the token is the label's only way in
    assert net.encoder.emb.weight.shape == (11, cfg.unet.context_dim)  # 10 classes and the null one
    embedding = build_network(dataclasses.replace(cfg, condition="",
                                                  unet=dataclasses.replace(cfg.unet, context_dim=None)))
    assert embedding.class_emb is not None and not any(hasattr(m, "cross_attn") for m in embedding.modules())
    result = train_images(cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    assert result["steps"] == 3 and np.all(np.isfinite(result["losses"]))
    train_images(_class_token_cfg(steps=2), tmp_path / "resumed", progress=False, log=lambda *_: None)
    train_images(cfg, tmp_path / "resumed", resume=True, progress=False, log=lambda *_: None)
    a, _ = model_from_checkpoint(tmp_path / "run", use_ema=False)
    b, _ = model_from_checkpoint(tmp_path / "resumed", use_ema=False)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())   # exact resume
    net, cfg = model_from_checkpoint(tmp_path / "run")
    kw = dict(sampler="heun", steps=3, seed=2)
    x = sample_images(net, cfg, 3, class_labels=[0, 5, 9], **kw)
    assert x.shape == (3, 1, 28, 28) and torch.isfinite(x).all()
    assert not torch.allclose(x, sample_images(net, cfg, 3, class_labels=[1, 6, 8], **kw))   # the label matters
    null = sample_images(net, cfg, 3, class_labels=[10, 10, 10], **kw)                      # the null token
    torch.testing.assert_close(sample_images(net, cfg, 3, class_labels=[0, 5, 9], guidance=-1.0, **kw), null,
                               rtol=1e-4, atol=1e-5)                  # w = -1: the unconditional model


def test_the_command_line_trains_samples_and_evaluates_a_class_token_model(tmp_path, capsys):
    import json

    from minidiff.cli import main

    run = str(tmp_path / "run")
    assert main(["train", "--backend", "torch", "--dataset", "fashion-mnist", "--condition", "class", "--preset",
                 "tiny", "--limit", "64", "--steps", "2", "--sample-every", "0", "--out", run]) == 0
    assert main(["sample", "--ckpt", run, "--n", "2", "--steps", "2", "--class", "7", "--guidance", "2",
                 "--out", str(tmp_path / "grid.png")]) == 0
    assert main(["eval", "--ckpt", run, "--n", "10", "--steps", "2", "--n-reference", "40",
                 "--out", str(tmp_path / "eval.json")]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert 0 <= report["class_accuracy"] <= 1 and np.isfinite(report["fd"])
    capsys.readouterr()
    assert main(["sample", "--ckpt", run, "--n", "2", "--prompt", "a bag", "--out", str(tmp_path / "x.png")]) == 2
    assert "text-conditioned" in capsys.readouterr().err


def test_condition_class_refuses_what_it_cannot_use():
    import dataclasses

    cfg = _class_token_cfg()
    with pytest.raises(ValueError, match="condition 'class'.*class_conditional"):
        dataclasses.replace(cfg, class_conditional=False).validate()
    with pytest.raises(ValueError, match="condition 'class' needs unet.context_dim"):
        dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, context_dim=None)).validate()
    with pytest.raises(ValueError, match="context_dim needs attention_resolutions"):
        dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, attention_resolutions=())).validate()
