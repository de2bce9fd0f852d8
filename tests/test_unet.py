"""The U-Net: shapes, the two model contracts (eps-model in DDIM, raw net inside an EDM denoiser
in Heun), gradients, seeding and the argument errors.  Tiny configurations only: CPU in seconds."""
import numpy as np
import pytest

import torch

from minidiff import edm, samplers, schedules  # noqa: E402
from minidiff.torch.unet import UNet, UNetConfig  # noqa: E402


def tiny(**kw):
    cfg = dict(in_channels=1, image_size=28, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
               attention_resolutions=(), num_heads=2, groups=4, dropout=0.0)
    cfg.update(kw)
    return UNetConfig(**cfg)


def build(seed=0, **kw):
    torch.manual_seed(seed)
    return UNet(tiny(**kw))


@pytest.mark.parametrize("kw, shape", [
    (dict(), (3, 1, 28, 28)),
    (dict(attention_resolutions=(14,)), (3, 1, 28, 28)),
    (dict(attention_resolutions=(28, 14), num_classes=10, time_embedding="fourier"), (3, 1, 28, 28)),
    (dict(image_size=8, in_channels=3, out_channels=6, channel_mults=(1, 2, 2), attention_resolutions=(4, 2),
          num_classes=3, dropout=0.1), (3, 6, 8, 8)),
    (dict(image_size=8, channel_mults=(1,), num_res_blocks=2), (3, 1, 8, 8)),
])
def test_output_shape(kw, shape):
    net = build(**kw)
    cfg = net.config
    x = torch.randn(3, cfg.in_channels, cfg.image_size, cfg.image_size)  # (B, C, H, W)
    y = None if cfg.num_classes is None else torch.tensor([0, cfg.num_classes - 1, net.null_class])
    out = net(x, torch.tensor([0, 10, 999]), class_labels=y)
    assert out.shape == shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert net(x, torch.rand(3), class_labels=y).shape == shape        # float t (EDM's c_noise)
    assert net(x, 5, class_labels=y).shape == shape                     # a scalar t is broadcast
    n_attn = sum(m.__class__.__name__ == "Attention" for m in net.modules())
    assert (n_attn > 0) == bool(cfg.attention_resolutions)
    assert f"{net.num_parameters():,} parameters" in net.summary()
    assert net.num_parameters() == sum(p.numel() for p in net.parameters())


def test_class_labels_change_the_output():
    net = build(num_classes=4)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([100, 100])
    with torch.no_grad():  # residual branches start near zero (blocks ~ identity): perturb like training
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
        a, b = net(x, t, torch.tensor([0, 0])), net(x, t, torch.tensor([1, 1]))
        c = net(x, torch.tensor([900, 900]), torch.tensor([0, 0]))
    assert (a - b).abs().max() > 1e-4 * a.abs().max()
    assert (a - c).abs().max() > 1e-4 * a.abs().max()


def test_eps_model_in_ddim():
    net = build(attention_resolutions=(14,)).eval()
    alpha_bar = schedules.alpha_bars(schedules.linear_betas(1000))
    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x0 = samplers.ddim_sample(net, x_T, alpha_bar, samplers.ddim_timesteps(1000, 2))
    assert x0.shape == x_T.shape and torch.isfinite(x0).all()
    # class-conditional: the labels travel as a keyword argument
    cond = build(num_classes=10).eval()
    with torch.no_grad():
        x0 = samplers.ddim_sample(cond, x_T, alpha_bar, [500, 0], class_labels=torch.tensor([3, 10]))
    assert x0.shape == x_T.shape and torch.isfinite(x0).all()


def test_denoiser_in_heun_with_edm_preconditioning():
    net = build(image_size=8, channel_mults=(1, 2), attention_resolutions=(4,), time_embedding="fourier").eval()
    D = edm.precondition(lambda x, c: net(x, c), "edm")
    sigmas = edm.karras_sigmas(2)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * float(sigmas[0])
    nfe = []
    with torch.no_grad():
        x0 = samplers.heun_sample(lambda x, s: nfe.append(1) or D(x, s), x, sigmas)
    assert x0.shape == x.shape and torch.isfinite(x0).all() and len(nfe) == 3  # 2N - 1


def test_gradient_reaches_every_parameter():
    net = build(attention_resolutions=(14,), num_classes=3, dropout=0.1, time_embedding="fourier")
    x = torch.randn(4, 1, 28, 28)
    loss = (net(x, torch.rand(4), torch.tensor([0, 1, 2, 3])) - x).square().mean()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not (p.grad != 0).any()]
    assert not missing, f"no gradient reached: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_same_seed_same_weights_and_output():
    kw = dict(attention_resolutions=(14,), num_classes=3, time_embedding="fourier")
    a, b, c = build(0, **kw), build(0, **kw), build(1, **kw)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)  # incl. Fourier freqs
    assert not torch.equal(sa["stem.weight"], sc["stem.weight"])
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([3, 700]), torch.tensor([2, 3])
    assert torch.equal(a.eval()(x, t, y), b.eval()(x, t, y))


def test_errors():
    with pytest.raises(ValueError, match="image_size must be divisible by .* 4"):
        tiny(image_size=30, channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="attention_resolutions"):
        tiny(attention_resolutions=(7,))
    with pytest.raises(ValueError, match="time_embedding"):
        tiny(time_embedding="learned")
    with pytest.raises(ValueError, match="groups"):
        tiny(groups=3)
    with pytest.raises(ValueError, match="num_heads"):
        tiny(num_heads=3, groups=1, attention_resolutions=(28,))
    with pytest.raises(ValueError, match="dropout"):
        tiny(dropout=1.0)

    net = build()
    with pytest.raises(ValueError, match=r"in_channels=1.*\(2, 3, 28, 28\)"):
        net(torch.randn(2, 3, 28, 28), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="28x28"):
        net(torch.randn(2, 1, 32, 32), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="t must have shape"):
        net(torch.randn(2, 1, 28, 28), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="unconditional"):
        net(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), class_labels=torch.tensor([0, 1]))

    cond = build(num_classes=10)
    with pytest.raises(ValueError, match="class_labels are required"):
        cond(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        cond(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), class_labels=torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="class_labels was|class_labels must"):
        cond(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), class_labels=torch.tensor([0.5, 1.0]))


def test_parameter_count_printed(capsys):
    torch.manual_seed(0)
    net = UNet(tiny(), verbose=True)
    assert f"{net.num_parameters():,} parameters" in capsys.readouterr().out
    assert np.isclose(net.num_parameters(), sum(p.numel() for p in net.parameters()))


def test_the_unet_uses_these_functions():
    """The U-Net's blocks call the reference functions (so the lesson's code is the model's):
    modulate directly, attention through Attention.kernel, whose fused default equals it."""
    import inspect

    from minidiff.torch import unet

    assert "modulate(" in inspect.getsource(unet.ResBlock.forward)
    torch.manual_seed(0)
    net = unet.UNet(unet.UNetConfig(base_channels=16, channel_mults=(1, 2), attention_resolutions=(14,),
                                    dropout=0.0)).double()
    for p in net.parameters():                       # make the attention branches matter
        p.data.normal_(0, 0.2)
    x, t = torch.randn(2, 1, 28, 28, dtype=torch.float64), torch.tensor([3.0, 500.0], dtype=torch.float64)
    fused = net(x, t)
    try:
        unet.Attention.kernel = staticmethod(unet.attention)
        plain = net(x, t)
    finally:
        unet.Attention.kernel = staticmethod(torch.nn.functional.scaled_dot_product_attention)
    torch.testing.assert_close(plain, fused)


def test_heads_split_channels_in_blocks_and_merge_back():
    from minidiff.torch.attention import merge_heads, split_heads

    x = torch.arange(2 * 5 * 12, dtype=torch.float64).reshape(2, 5, 12)    # (B, L, C)
    h = split_heads(x, 3)
    assert h.shape == (2, 3, 5, 4)
    torch.testing.assert_close(h[:, 1], x[:, :, 4:8])                      # head 1: channels 4..7
    torch.testing.assert_close(merge_heads(h), x)


def test_attention_lives_in_its_own_module_and_the_unet_uses_it():
    from minidiff.torch import attention, unet

    assert unet.Attention is attention.Attention and unet.attention is attention.attention
