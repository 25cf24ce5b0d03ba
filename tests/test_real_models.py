"""Models nobody here wrote: small Hugging Face transformers built from configs (random init,
nothing downloaded), converted by every rule and trained in their own loop."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import alignlab
from alignlab.rules.brsf import ResampledSignFeedback
from alignlab.rules.wm import MirrorFeedback
from helpers import with_feedback_equal_to_weights

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

RULES = alignlab.rules.available()
V, N, L = 64, 4, 8  # vocabulary, batch, sequence length


def _gpt2():
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, vocab_size=V, n_positions=32, bos_token_id=0, eos_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def _llama():
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=V, max_position_embeddings=32, bos_token_id=0, eos_token_id=0, pad_token_id=0))


def _bert():
    return transformers.BertForSequenceClassification(transformers.BertConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=V,
        max_position_embeddings=32, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def _vit():
    return transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=16,
        patch_size=4, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def _t5():
    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4, vocab_size=V, decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=1, dropout_rate=0.0))


def _falcon():
    return transformers.FalconForCausalLM(transformers.FalconConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, vocab_size=V, bos_token_id=0, eos_token_id=0,
        hidden_dropout=0.0, attention_dropout=0.0))


BUILD = {"gpt2": _gpt2, "llama": _llama, "bert": _bert, "vit": _vit, "t5": _t5, "falcon": _falcon}


def batch(kind: str, n: int = N, length: int = L, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    if kind == "vit":
        return {"pixel_values": torch.randn(n, 3, 16, 16, generator=g), "labels": torch.randint(0, 3, (n,), generator=g)}
    ids = torch.randint(2, V, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    if kind == "bert":
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 3, (n,), generator=g)}
    if kind == "t5":
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(2, V, (n, length // 2), generator=g)}
    return {"input_ids": ids, "attention_mask": mask, "labels": ids}


def logits_loss(kind: str, out, b: dict) -> torch.Tensor:
    """The plain loop's loss, from the logits alone."""
    logits, y = out.logits, b["labels"]
    if kind in ("gpt2", "llama", "falcon"):
        logits, y = logits[:, :-1], y[:, 1:]
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def linear_maps(model: nn.Module) -> list[str]:
    """Every module computing a linear map, counted independently of alignlab's table."""
    conv1d = transformers.pytorch_utils.Conv1D
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, conv1d))]


def build(kind: str, rule: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    model = BUILD[kind]()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing may be left on BP here
        return alignlab.convert(model, rule, strict=True, **kwargs)


@pytest.mark.parametrize("kind", BUILD)
@pytest.mark.parametrize("rule", RULES)
def test_every_linear_map_is_converted(kind, rule):
    model = build(kind, rule)
    converted = {n for n, _, f in alignlab.converted_layers(model) if f.rule_name == rule}
    assert converted == set(linear_maps(model))
    if kind == "gpt2":
        assert len(converted) == 9  # 2 × (c_attn, c_proj, mlp.c_fc, mlp.c_proj) + lm_head


def _train(kind: str, rule: str, plain: bool, steps: int = 12) -> tuple[list[float], nn.Module, dict]:
    model = build(kind, rule)
    model.train()
    b = batch(kind)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        out = model(**b)
        loss = logits_loss(kind, out, b) if plain else out.loss
        loss.backward()
        losses.append(loss.item())
        if len(losses) == 1:
            grads = {n: p.grad for n, p in model.named_parameters()}
        opt.step()
    return losses, model, grads


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert", "vit", "t5"])
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("loop", ["hf", "plain"])
def test_every_rule_trains_in_the_ordinary_loop(kind, rule, loop):
    losses, model, grads = _train(kind, rule, plain=loop == "plain")
    assert losses[-1] < losses[0], losses
    # every parameter BP would update gets a finite gradient
    ref = BUILD[kind]()
    b = batch(kind)
    out = ref(**b)
    (logits_loss(kind, out, b) if loop == "plain" else out.loss).backward()
    want = {n for n, p in ref.named_parameters() if p.grad is not None}
    for name in want:
        assert grads[name] is not None and torch.isfinite(grads[name]).all(), name


@pytest.mark.parametrize("rule", RULES)
def test_state_dict_round_trips_with_weights_only(rule, tmp_path):
    a = build("gpt2", rule)
    a(**batch("gpt2")).loss.backward()
    torch.save(a.state_dict(), tmp_path / "sd.pt")
    b = build("gpt2", rule, seed=1)
    b.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


@pytest.mark.parametrize("kind", ["gpt2", "falcon", "t5"])
def test_fa_with_feedback_equal_to_weights_is_bp(kind):
    """Conv1D stores W as (in, out) and FalconLinear overrides forward: both must transport exactly."""
    torch.manual_seed(0)
    ref = BUILD[kind]()
    fa = with_feedback_equal_to_weights(ref)
    b = batch(kind)
    for model in (ref, fa):
        model(**b).loss.backward()
    got = dict(fa.named_parameters())
    for name, p in ref.named_parameters():
        torch.testing.assert_close(got[name].grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


# ---- dfa in the models' own loops -------------------------------------------------------

@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert", "vit", "t5"])
def test_dfa_gradient_checkpointing_gives_the_same_gradients(kind):
    plain = build(kind, "dfa")
    ckpt = copy.deepcopy(plain)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # renamed activation_checkpointing_enable in v6
        ckpt.gradient_checkpointing_enable()
    b = batch(kind)
    for model in (plain, ckpt):
        model.train()
        model(**b).loss.backward()
    got = dict(ckpt.named_parameters())
    for name, p in plain.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(got[name].grad, p.grad, msg=name)


@pytest.mark.parametrize("reentrant", [False, True])
def test_dfa_torch_checkpoint_gives_the_same_gradients(reentrant):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x, checkpoint=False):
            inner = lambda h: torch.tanh(self.b(torch.tanh(self.a(h))))  # noqa: E731
            h = torch.utils.checkpoint.checkpoint(inner, x, use_reentrant=reentrant) if checkpoint else inner(x)
            return self.head(h)

    torch.manual_seed(0)
    model = alignlab.convert(Net(), "dfa")
    x = torch.randn(5, 6, requires_grad=reentrant)  # reentrant checkpoints need an input that requires grad
    grads = []
    for checkpoint in (False, True):
        model.zero_grad()
        model(x, checkpoint).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert", "t5"])
def test_dfa_trains_with_dynamic_padding_and_batch_sizes(kind):
    model = build(kind, "dfa")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    shapes = [(4, 10), (4, 12), (3, 10), (4, 12), (3, 6)]
    first = last = None
    for epoch in range(4):
        for i, (n, length) in enumerate(shapes):
            b = batch(kind, n, length, seed=i)
            opt.zero_grad()
            loss = model(**b).loss
            loss.backward()
            opt.step()
            if epoch == 0 and i == 0:
                first = loss.item()
            last = loss.item() if i == 0 else last
    assert last < first


def test_dfa_cnn_takes_images_of_changing_size():
    torch.manual_seed(0)
    model = alignlab.convert(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)), "dfa")
    for size in (8, 12, 9):
        x = torch.randn(5, 1, size, size, requires_grad=True)
        nn.functional.cross_entropy(model(x), torch.randint(0, 3, (5,))).backward()
        assert x.grad.shape == x.shape and torch.isfinite(model[0].weight.grad).all()


def test_dfa_dense_projection_with_new_shapes_is_a_one_line_error():
    model = alignlab.convert(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8, 3)),
                             "dfa", project="dense")
    model(torch.randn(2, 1, 6, 6, requires_grad=True)).sum().backward()
    with pytest.raises(ValueError, match=r"dfa: layer '0' with project='dense' needs the shapes of its first pass") as info:
        model(torch.randn(2, 1, 8, 8, requires_grad=True)).sum().backward()
    assert "\n" not in str(info.value)


def test_dfa_one_layer_applied_to_two_shapes():
    shared = nn.Linear(4, 4)
    model = alignlab.convert(nn.Sequential(shared, nn.Tanh(), shared, nn.Flatten(), nn.Linear(4 * 5, 3)), "dfa")
    for n in (2, 3):
        x = torch.randn(n, 5, 4, requires_grad=True)
        model(x).sum().backward()
        assert x.grad.shape == x.shape


def test_dfa_reads_logits_from_outputs_of_every_form():
    torch.manual_seed(0)
    model = build("gpt2", "dfa")
    b = batch("gpt2")
    want_grads = None
    for call in (lambda: model(**b).loss,
                 lambda: model(**b, return_dict=False)[0],  # (loss, logits, ...): the scalar is skipped
                 lambda: logits_loss("gpt2", model(**b), b)):
        model.zero_grad()
        call().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        if want_grads is None:
            want_grads = grads
        for a, w in zip(grads, want_grads):
            torch.testing.assert_close(a, w)


@pytest.mark.parametrize("output", ["logits", 1, lambda out: out["logits"]])
def test_dfa_output_option_names_the_error(output):
    class DictNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

        def forward(self, x):
            logits = self.b(torch.tanh(self.a(x)))
            return {"features": torch.ones(1), "logits": logits} if not isinstance(output, int) else (x.sum(), logits)

    model = alignlab.convert(DictNet(), "dfa", output=output)
    out = model(torch.randn(5, 4))
    logits = out["logits"] if isinstance(out, dict) else out[1]
    logits.sum().backward()
    assert model.a.weight.grad is not None and torch.isfinite(model.a.weight.grad).all()


def test_dfa_without_an_output_tensor_is_a_one_line_error():
    class Opaque(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)

        def forward(self, x):
            return {"score": self.a(x).sum()}

    model = alignlab.convert(Opaque(), "dfa")
    with pytest.raises(TypeError, match=r"dfa: found no output error in the model's dict .*output=KEY") as info:
        model(torch.randn(5, 4))
    assert "\n" not in str(info.value)


def test_output_option_needs_a_direct_rule():
    with pytest.raises(ValueError, match=r"output= tells a direct-feedback rule where the output error is; rule 'fa'"):
        alignlab.convert(nn.Sequential(nn.Linear(2, 2)), "fa", output="logits")
    with pytest.raises(ValueError, match=r"output=3.5 is not valid; give a key, an index or a function"):
        alignlab.convert(nn.Sequential(nn.Linear(2, 2)), "dfa", output=3.5)


# ---- feedback follows its weight; undo; save and load -------------------------------------

@pytest.mark.parametrize("rule", RULES)
def test_feedback_follows_resized_token_embeddings(rule):
    model = build("gpt2", rule)
    head = model.lm_head
    before = {k: v.clone() for k, v in head.state_dict().items() if "feedback" in k}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # learned feedback: "rebuild the optimizer"
        model.resize_token_embeddings(72)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        ids = torch.randint(0, 72, (N, L))
        model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    assert model.lm_head.weight.shape == (72, 32)
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied
    for key, old in before.items():  # existing rows kept where a feedback tensor is shaped like W
        new = head.state_dict()[key]
        redrawn = isinstance(head.feedback, (ResampledSignFeedback, MirrorFeedback))  # both move B whenever W changes
        if old.shape == (64, 32) and not redrawn:
            assert new.shape == (72, 32) and torch.equal(new[:64], old), key


def test_learned_feedback_resize_says_to_rebuild_the_optimizer():
    model = build("gpt2", "kp")
    model.resize_token_embeddings(72)
    ids = torch.randint(0, 72, (N, L))
    with pytest.warns(UserWarning, match=r"kp: feedback of layer 'lm_head' resized from \(64, 32\) to \(72, 32\); "
                                         r"build the optimizer again"):
        model(input_ids=ids, labels=ids).loss.backward()


def test_exclude_after_convert_puts_layers_back_on_bp_and_revert_undoes_all():
    model = build("gpt2", "fa")
    original = set(BUILD["gpt2"]().state_dict())
    alignlab.convert(model, "kp", exclude=["lm_head"])
    assert type(model.lm_head) is nn.Linear and not hasattr(model.lm_head, "feedback")
    assert {f.rule_name for _, _, f in alignlab.converted_layers(model)} == {"kp"}
    assert "lm_head" in alignlab.summary(model) and "excluded" in alignlab.summary(model)
    alignlab.revert(model)
    assert alignlab.converted_layers(model) == []
    assert set(model.state_dict()) == original
    assert type(model.transformer.h[0].attn.c_attn) is transformers.pytorch_utils.Conv1D


@pytest.mark.parametrize("rule", RULES)
def test_save_pretrained_then_from_pretrained_convert_load_feedback(rule, tmp_path):
    a = build("gpt2", rule)
    b = batch("gpt2")
    a(**b).loss.backward()
    a.save_pretrained(tmp_path)
    loaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path)
    alignlab.convert(loaded, rule)
    alignlab.load_feedback(loaded, tmp_path)
    want = a.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, want[key]), key
    for model in (a, loaded):
        model.zero_grad()
        model(**b).loss.backward()
    got = dict(loaded.named_parameters())
    for name, p in a.named_parameters():
        torch.testing.assert_close(got[name].grad, p.grad, msg=name)


def test_load_feedback_without_the_keys_is_a_one_line_error(tmp_path):
    BUILD["gpt2"]().save_pretrained(tmp_path)  # saved unconverted
    model = build("gpt2", "fa")
    with pytest.raises(ValueError, match=r"no feedback tensors for 9 converted layers in .*: transformer.h.0.attn.c_attn.feedback.B, ") as info:
        alignlab.load_feedback(model, tmp_path)
    assert "\n" not in str(info.value)


def test_generate_gives_the_unconverted_models_tokens():
    torch.manual_seed(0)
    ref = BUILD["gpt2"]()
    model = alignlab.convert(copy.deepcopy(ref), "dfa")
    ids = torch.randint(2, V, (1, 5))
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(ids, **kwargs), ref.generate(ids, **kwargs))
