"""Tiny random-weight pipelines of the other families (SDXL, FLUX.1, SD 3.5, FLUX.2-klein), offline.

The same idea as ``tiny_model.py`` for Stable Diffusion: a complete diffusers folder that
``from_pretrained`` loads exactly like the real checkpoint (same pipeline class, same component
classes: SDXL's two CLIP encoders and micro-conditioned UNet, packed latents, flow-matching
scheduler, T5 and Qwen tokenizers), small enough to render
64x64 in a fraction of a second on two CPU cores. Component sizes follow diffusers' own pipeline
tests; the one thing those tests download, the tokenizers, is built here: CLIP's byte-level BPE
without merges (tiny_model), a T5 Unigram vocabulary of single characters, and a Qwen2 byte-level
BPE without merges. Random weights draw coloured noise; what they prove is that every code path
(loading, batching, LoRAs, previews, each interface) runs on the real classes.

Usage::

    python -m serve_app.testing.tiny_model .cache/tiny-flux --kind flux
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path
from typing import Any

from serve_app.testing.tiny_tokenizers import TINY_MODEL_SEED, bytes_to_unicode
from serve_app.testing.tiny_tokenizers import byte_level_vocab as _byte_level_vocab


def tiny_clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=_byte_level_vocab(), merges=[], model_max_length=77)


def _clip_config(projection: bool = False, hidden_size: int = 32, **extra: Any) -> Any:
    from transformers import CLIPTextConfig

    vocab = _byte_level_vocab()
    return CLIPTextConfig(
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        hidden_size=hidden_size,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=len(vocab),
        max_position_embeddings=77,
        hidden_act="gelu",
        **({"projection_dim": hidden_size} if projection else {}),
        **extra,
    )


def tiny_t5_tokenizer() -> Any:
    """A T5 tokenizer (Unigram over single characters) built in memory: no sentencepiece file."""
    from transformers import T5TokenizerFast

    pieces = ["<pad>", "</s>", "<unk>", "▁", *(string.ascii_letters + string.digits + string.punctuation)]
    vocab = [(piece, 0.0 if index < 3 else -float(index)) for index, piece in enumerate(pieces)]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


def tiny_t5(seed: int, vocab_size: int) -> Any:
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )


def _tiny_vae(latent_channels: int, seed: int, **extra: Any) -> Any:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        # Four stages: the real 8x downsampling, so 64x64 is an 8x8 latent grid (few tokens).
        block_out_channels=(16, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        **extra,
    )


# SDXL's micro-conditioning: original size, crop corner and target size, two numbers each, every
# number embedded in ADD_TIME_DIM channels and concatenated with text_encoder_2's pooled output.
SDXL_TIME_IDS = 6
ADD_TIME_DIM = 8


def build_tiny_sdxl(seed: int = TINY_MODEL_SEED) -> Any:
    """SDXL's shape: a UNet with ``addition_embed_type="text_time"`` (time ids + pooled text embeds),
    CLIPTextModel + CLIPTextModelWithProjection whose penultimate hidden states are concatenated
    (so the UNet's cross-attention width is the sum of both encoders' widths: 32 + 64 here, 768 +
    1280 for the real one), an 8x VAE marked ``force_upcast`` with SDXL's scaling factor (its fp16
    decode overflows: the replica decodes through an fp32 copy), and the Euler scheduler the real
    checkpoint ships. Sizes after diffusers' own SDXL pipeline tests (``get_dummy_components``).
    """
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    hidden, hidden_2 = 32, 64  # text_encoder (CLIP-L's place), text_encoder_2 (OpenCLIP bigG's)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time",
        addition_time_embed_dim=ADD_TIME_DIM,
        projection_class_embeddings_input_dim=SDXL_TIME_IDS * ADD_TIME_DIM + hidden_2,
        cross_attention_dim=hidden + hidden_2,
        norm_num_groups=8,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_clip_config(hidden_size=hidden))
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(projection=True, hidden_size=hidden_2))
    return StableDiffusionXLPipeline(
        vae=_tiny_vae(4, seed, scaling_factor=0.13025, force_upcast=True),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tiny_clip_tokenizer(),
        tokenizer_2=tiny_clip_tokenizer(),
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        ),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def build_tiny_flux(seed: int = TINY_MODEL_SEED, guidance_embeds: bool = True) -> Any:
    """FLUX.1's shape: FluxTransformer2DModel on packed 4-channel latents, CLIP + T5, shift/scale VAE.

    ``guidance_embeds=True`` is FLUX.1-dev (guidance is an input), False FLUX.1-schnell. The VAE
    downsamples 8x like the real one, so the packed-latent arithmetic is the real one.
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_clip_config())
    tokenizer_2 = tiny_t5_tokenizer()
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=16,
            max_image_seq_len=256,
        ),
        vae=_tiny_vae(
            4,
            seed,
            shift_factor=0.0609,
            scaling_factor=1.5035,
            use_quant_conv=False,
            use_post_quant_conv=False,
        ),
        text_encoder=text_encoder,
        tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=tiny_t5(seed, len(tokenizer_2)),
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


def build_tiny_sd3(seed: int = TINY_MODEL_SEED) -> Any:
    """SD 3.5's shape: SD3Transformer2DModel (dual attention, qk-norm), two CLIPs with projection
    and T5, 16-channel latents."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=16,
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(_clip_config(projection=True))
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(projection=True))
    tokenizer_3 = tiny_t5_tokenizer()
    return StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_tiny_vae(
            16,
            seed,
            shift_factor=0.0609,
            scaling_factor=1.5035,
            use_quant_conv=False,
            use_post_quant_conv=False,
        ),
        text_encoder=text_encoder,
        tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tiny_clip_tokenizer(),
        text_encoder_3=tiny_t5(seed, len(tokenizer_3)),
        tokenizer_3=tokenizer_3,
        transformer=transformer,
    )


# Qwen's chat format, as FLUX.2-klein's pipeline applies it to every prompt.
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_qwen_tokenizer() -> Any:
    """A Qwen2 byte-level BPE tokenizer without merges (single bytes), with Qwen's specials."""
    from transformers import Qwen2TokenizerFast

    vocab = {char: index for index, char in enumerate(bytes_to_unicode().values())}
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[special] = len(vocab)
    tokenizer = Qwen2TokenizerFast(
        vocab=vocab,
        merges=[],
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=512,
    )
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def build_tiny_flux2_klein(seed: int = TINY_MODEL_SEED) -> Any:
    """FLUX.2-klein's shape: Flux2Transformer2DModel (no guidance embedding: step-distilled), a
    Qwen3 text encoder read at layers 9, 18 and 27 (so 28 tiny layers), AutoencoderKLFlux2."""
    import torch
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = tiny_qwen_tokenizer()
    torch.manual_seed(seed)
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=28,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
        )
    )
    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=48,  # three stacked hidden states of 16
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(
        block_out_channels=(16, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )
    return Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_image_seq_len=16, max_image_seq_len=256
        ),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )


def build_tiny_flux_schnell(seed: int = TINY_MODEL_SEED) -> Any:
    return build_tiny_flux(seed, guidance_embeds=False)


FAMILY_BUILDERS = {
    "sdxl": build_tiny_sdxl,
    "flux": build_tiny_flux,
    "flux-schnell": build_tiny_flux_schnell,
    "sd3": build_tiny_sd3,
    "flux2-klein": build_tiny_flux2_klein,
}

LORA_FILE = "pytorch_lora_weights.safetensors"


def _staged(target: Path, write: Any) -> Path:
    """Write into a temporary sibling, then rename: a half-built folder is never loaded."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    write(staging)
    staging.rename(target)
    return target


def _save_transformer_lora(
    directory: str | Path, seed: int, transformer: Any, pipeline_class: Any, target_modules: list[str]
) -> Path:
    """A random-weight PEFT LoRA on ``transformer``'s ``target_modules``, saved by ``pipeline_class``
    in its family's LoRA format. Random A and B (PEFT starts B at zero: no effect)."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)  # callers return an existing file before building the transformer
    transformer.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=target_modules, init_lora_weights=False)
    )
    layers = get_peft_model_state_dict(transformer)
    return _staged(
        Path(directory),
        lambda staging: pipeline_class.save_lora_weights(staging, transformer_lora_layers=layers),
    )


def save_tiny_flux_lora(directory: str | Path, seed: int = 1) -> Path:
    """A LoRA for the tiny FLUX.1 transformer's attention, in diffusers' FLUX LoRA format."""
    from diffusers import FluxPipeline

    if (Path(directory) / LORA_FILE).exists():
        return Path(directory)
    modules = ["to_q", "to_k", "to_v", "to_out.0"]
    return _save_transformer_lora(directory, seed, build_tiny_flux().transformer, FluxPipeline, modules)


def save_tiny_sd3_lora(directory: str | Path, seed: int = 1) -> Path:
    """A LoRA for the tiny SD 3.5 transformer's joint attention, in diffusers' SD3 LoRA format.

    The modules diffusers' SD3 DreamBooth LoRA script trains: both streams' projections (the image
    stream's ``to_*``, the text stream's ``add_*`` and ``to_add_out``), which also covers the
    dual-attention layer's second attention.
    """
    from diffusers import StableDiffusion3Pipeline

    if (Path(directory) / LORA_FILE).exists():
        return Path(directory)
    modules = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
    transformer = build_tiny_sd3().transformer
    return _save_transformer_lora(directory, seed, transformer, StableDiffusion3Pipeline, modules)


def save_tiny_safety_checker(directory: str | Path, seed: int = 0, flag_everything: bool = False) -> Path:
    """A standalone safety checker's folder: ``StableDiffusionSafetyChecker`` (tiny CLIP vision
    tower, random concept embeddings) and its ``CLIPImageProcessor``, as
    ``CompVis/stable-diffusion-safety-checker`` ships them."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    target = Path(directory)
    if (target / "config.json").exists():
        return target
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "vocab_size": 100,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(config).eval()
    if flag_everything:
        # Every concept's threshold below any cosine similarity: each image is flagged, which is
        # what a test of the flagged path needs from random weights.
        with torch.no_grad():
            checker.concept_embeds_weights.fill_(-2.0)

    def write(staging: Path) -> None:
        checker.save_pretrained(staging)
        CLIPImageProcessor(crop_size=32, size={"shortest_edge": 32}).save_pretrained(staging)

    return _staged(target, write)


def save_tiny_preview_decoder(directory: str | Path, latent_channels: int = 4, seed: int = 0) -> Path:
    """A tiny random ``AutoencoderTiny`` (TAESD's shape) for ``latent_channels``-channel latents:
    4 for SD 1.5/SDXL and the tiny FLUX.1 (its packed latents unpack to 4 channels), 16 for TAESD3
    and TAEF1 at real size."""
    import torch
    from diffusers import AutoencoderTiny

    target = Path(directory)
    if (target / "config.json").exists():
        return target
    torch.manual_seed(seed)
    decoder = AutoencoderTiny(
        latent_channels=latent_channels,
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    )
    return _staged(target, decoder.save_pretrained)
