"""Train the streaming codec with DAC's recipe: multi-scale mel + adversarial + feature matching +
VQ losses, a multi-period and a multi-band STFT discriminator, AdamW with warm-up and cosine decay.

    python train_codec_dac.py --data_dir data/synthetic --epochs 100 --batch_size 8 --save_every 10
    torchrun --nproc_per_node 4 train_codec_dac.py --config a6000 --data_dir data/prepared
    python train_codec_dac.py --resume            # continue the run in out_dir exactly
    python train_codec_dac.py --set train_codec.grad_accum=4   # 4 micro-batches per optimizer step
    python train_codec_dac.py --eval --checkpoint checkpoints/codec.safetensors --manifest M

One visible loop below (nanoGPT's train.py): setup, data, schedule, step, eval, checkpoint.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import checkpoint_io as ckio
import train_utils as tu
from audio_io import ManifestIndex, load_audio, read_manifest
from config import ConfigError, add_train_args, config_from_args, to_dict
from discriminator_dac import Discriminator, discriminator_loss, generator_losses
from spectral import MultiResolutionSTFTLoss, MultiScaleMelLoss, PhaseLoss
from telugu_codec_fixed import Codec, f0_loss, yin_f0


# --- data ---------------------------------------------------------------------------------------

class Crops(torch.utils.data.Dataset):
    """Random fixed-length crops of the manifest's clips. The crop of item i in epoch e is fixed by
    (seed, e, i), so a resumed run sees exactly the audio it would have seen. The manifest is
    indexed, not loaded (ManifestIndex): a corpus of any size streams from disk."""

    def __init__(self, manifest, segment: int, sample_rate: int, seed: int):
        self.rows = ManifestIndex(manifest)
        if not len(self.rows):
            raise SystemExit(f"{manifest}: no utterances")
        self.segment, self.sr, self.seed, self.epoch = segment, sample_rate, seed, 0

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        rng = tu.item_rng(self.seed, self.epoch, i)
        path = self.rows[i]["audio"]
        info = sf.info(path)
        if info.samplerate == self.sr and info.channels == 1:  # the prepared corpora: read only the crop
            start = int(rng.integers(0, max(1, info.frames - self.segment + 1)))
            pcm, _ = sf.read(path, start=start, frames=self.segment, dtype="float32")
        else:
            pcm = load_audio(path, self.sr)
            start = int(rng.integers(0, max(1, len(pcm) - self.segment + 1)))
            pcm = pcm[start:start + self.segment]
        pcm = np.pad(pcm, (0, self.segment - len(pcm)))
        pcm = pcm * float(10 ** (rng.uniform(-6, 3) / 20))  # level changes: the codec must not care
        return torch.from_numpy(np.clip(pcm, -1, 1).astype(np.float32))[None]


def delayed(target, delay):
    """The codec's output lags its input by `delay` samples; compare like with like."""
    return F.pad(target, (delay, 0))[..., : target.shape[-1]]


# --- evaluation during training -----------------------------------------------------------------

@torch.no_grad()
def validate(model, clips, mel_loss, device, n_q_list):
    """Mel distance and SI-SDR on whole held-out clips at several bitrates (cheap; codec_eval.py
    has PESQ/STOI/Opus)."""
    model.eval()
    out = {}
    for k in n_q_list:
        mels, sdrs = [], []
        for pcm in clips:
            x = pcm.to(device)[None, None]
            y = model.decode(model.encode(x, k))[..., : x.shape[-1]]
            ref = delayed(x, model.delay)
            mels.append(mel_loss(y, ref).item())
            r, e = ref.flatten()[model.delay:], y.flatten()[model.delay:]
            proj = (e @ r) / (r @ r + 1e-9) * r
            sdrs.append(10 * math.log10((proj @ proj).item() / (((e - proj) @ (e - proj)).item() + 1e-9) + 1e-9))
        out[f"mel_{k}cb"], out[f"sisdr_{k}cb"] = float(np.mean(mels)), float(np.mean(sdrs))
    model.train()
    return out


def mel_image(pcm, sr):
    import librosa
    mel = librosa.feature.melspectrogram(y=pcm, sr=sr, n_fft=1024, hop_length=256, n_mels=80)
    db = librosa.power_to_db(mel, ref=np.max)
    return ((db - db.min()) / (db.max() - db.min() + 1e-9))[::-1][None]  # [1, H, W] for add_image


# --- main ---------------------------------------------------------------------------------------

def main(argv=None):
    parser = add_train_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--eval", action="store_true", help="evaluate a checkpoint (codec_eval.py) and exit")
    parser.add_argument("--checkpoint", help="with --eval: the codec .safetensors")
    parser.add_argument("--manifest", help="with --eval: the JSONL manifest of held-out clips")
    parser.add_argument("--export", help="also write the final weights here (fp16 safetensors + JSON)")
    parser.add_argument("--init", help="start from these codec weights (.safetensors, e.g. the shipped codec) "
                                       "with fresh optimizers: continues a run whose training checkpoint is gone")
    parser.add_argument("--decoder_only", action="store_true",
                        help="freeze the encoder and quantizer (codes and latents stay exactly as they are, so "
                             "an S2S model trained on them keeps working) and train only the decoder, e.g. with "
                             "the GAN on top of a mel-only codec")
    args, rest = parser.parse_known_args(argv)
    if args.eval:
        import codec_eval
        ev = (["--checkpoint", args.checkpoint] if args.checkpoint else []) + \
             (["--manifest", args.manifest] if args.manifest else [])
        return codec_eval.main(ev + rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        cfg = config_from_args(args, "train_codec")
    except ConfigError as e:
        parser.error(str(e))
    train = cfg.train_codec
    rt = tu.setup_runtime(train)
    out_dir = Path(train.out_dir)
    data_dir = Path(cfg.data.data_dir)
    train_manifest = data_dir / cfg.data.train_manifest
    if not train_manifest.exists():
        raise SystemExit(f"no training manifest at {train_manifest}: build one with "
                         f"`python prepare_speaker_data.py --synthetic --out {data_dir}`")

    segment = int(train.segment_s * cfg.codec.sample_rate) // cfg.codec.frame_size * cfg.codec.frame_size
    dataset = Crops(train_manifest, segment, cfg.codec.sample_rate, train.seed)
    val_manifest = data_dir / cfg.data.val_manifest
    val_clips = []
    if rt.is_main and val_manifest.exists():
        for row in itertools.islice(read_manifest(val_manifest), 8):
            val_clips.append(torch.from_numpy(load_audio(row["audio"], cfg.codec.sample_rate)))

    model = Codec(cfg.codec).to(rt.device)
    disc = Discriminator(cfg.discriminator).to(rt.device)
    mel_loss = MultiScaleMelLoss(cfg.codec.sample_rate, cfg.loss.mel_windows, cfg.loss.mel_bins).to(rt.device)
    phase_loss = PhaseLoss().to(rt.device)
    stft_loss = MultiResolutionSTFTLoss(cfg.loss.stft_windows).to(rt.device)
    opt_g = torch.optim.AdamW(model.parameters(), lr=train.lr, betas=tuple(train.betas), weight_decay=train.weight_decay)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=train.lr, betas=tuple(train.betas), weight_decay=train.weight_decay)

    ckpts = ckio.Checkpoints(out_dir, train.keep_checkpoints)
    step, epoch, batch_in_epoch, elapsed = 0, 0, 0, 0.0
    state, path = tu.resolve_resume(args.resume, ckpts)
    if state is not None:
        model.load_state_dict(state["model"])
        disc.load_state_dict(state["disc"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        elapsed = state.get("elapsed_s", 0.0)
        tu.set_rng_state(state["rng"], rt.rank)
        if rt.is_main:
            print(f"resumed from {path} at step {step} (epoch {epoch}, batch {batch_in_epoch})")
    elif args.init:
        # A codec from before the harmonic head (codec.harmonics) starts it from scratch.
        missing, unexpected = model.load_state_dict(ckio.load_safetensors(args.init), strict=False)
        if unexpected or any(not k.startswith("decoder.harmonic.") for k in missing):
            raise SystemExit(f"error: {args.init} does not fit this codec config: missing {missing}, "
                             f"unexpected {unexpected}")
        if rt.is_main:
            print(f"initialised the codec from {args.init}" + (" (new: the harmonic head)" if missing else ""))

    elif model.source_filter:
        # The source_filter latent carries the measured envelope: start each RVQ stage on the
        # principal directions of what the stages before it leave (a random start multiplies the
        # error at every stage). The first clips of epoch 0, so every rank gets the same codebooks.
        batch = torch.stack([dataset[i] for i in range(min(len(dataset), 64))]).to(rt.device)
        with torch.no_grad():
            model.quantizer.init_from_data(model._analyse(batch)[0], seed=train.seed)
        if rt.is_main:
            print(f"initialised the envelope codebooks from {len(batch)} training clips")

    if args.decoder_only:  # before DDP wraps it: DDP must not expect gradients for frozen weights
        for p in [*model.encoder.parameters(), *model.quantizer.parameters()]:
            p.requires_grad_(False)
    vq_warmup = 0 if args.decoder_only else cfg.codec.vq_warmup_steps  # decoder-only: quantized from step 0
    gen, dis = model, disc
    if rt.ddp:
        gen = DDP(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        dis = DDP(disc, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    # In the generator's pass the discriminators are a fixed critic: the raw module with its weights
    # frozen, so that pass neither computes nor all-reduces discriminator gradients.
    critic = disc
    if train.compile:
        gen, dis, critic = torch.compile(gen), torch.compile(dis), torch.compile(disc)

    accum = train.grad_accum
    n_batches = len(tu.epoch_batches(len(dataset), train.batch_size, 0, train.seed, rt.rank, rt.world_size))
    steps_per_epoch = tu.optimizer_steps_per_epoch(n_batches, accum)
    total_steps = train.max_steps or steps_per_epoch * train.epochs
    writer = tu.tensorboard(rt, out_dir)
    lw = cfg.loss

    f0_targets = {}  # micro-batch k -> YIN's F0 of its clips, computed once a step for teacher and loss

    def generate(net, x, vq_mix, k):
        """net(x): the codec's training pass; with a harmonic head, a share of the clips play
        YIN's F0 instead of the predicted one (HarmonicHead.teacher_f0)."""
        harmonic = getattr(model.decoder, "harmonic", None)  # the istft codec's optional head
        if harmonic is None:
            return net(x, vq_mix)
        if k not in f0_targets:  # the discriminators' pass and the generator's read the same clips
            f0_targets[k] = yin_f0(x.reshape(x.shape[0], -1), model.sample_rate, model.cfg.patch_size)
        true_f0 = f0_targets[k]
        forced = torch.rand(true_f0.shape[0], 1, device=true_f0.device) < lw.f0_teacher_share
        harmonic.teacher_f0 = true_f0 * forced
        try:
            return net(x, vq_mix)
        finally:
            harmonic.teacher_f0 = None

    def save():
        rng = tu.rng_state(rt)  # every rank's: a collective, so every rank calls save()
        if rt.is_main:
            ckpts.save({"model": model.state_dict(), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(),
                        "opt_d": opt_d.state_dict(), "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                        "elapsed_s": elapsed, "rng": rng, "config": to_dict(cfg)}, step, cfg)

    if rt.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"codec {n_params / 1e6:.2f} M params, {len(dataset)} clips, {n_batches} batches/epoch, "
              f"{total_steps} steps of {train.batch_size} x {accum} x {rt.world_size} clips, "
              f"device {rt.device}, world {rt.world_size}")
    bar = tqdm(total=total_steps, initial=step, disable=not rt.is_main, desc="codec", dynamic_ncols=True)
    done = step >= total_steps
    deadline = tu.Deadline(train.max_minutes)
    while not done and epoch < train.epochs:
        dataset.epoch = epoch
        batches = tu.epoch_batches(len(dataset), train.batch_size, epoch, train.seed, rt.rank, rt.world_size)
        loader = tu.make_loader(dataset, batches[batch_in_epoch:steps_per_epoch * accum], train, rt)
        micro = []  # the micro-batches of one optimizer step (batch_in_epoch counts micro-batches)
        for pcm in loader:
            micro.append(pcm)
            if len(micro) < accum:
                continue
            t0 = time.time()
            xs = [m.to(rt.device, non_blocking=True) for m in micro]
            targets = [delayed(x, model.delay) for x in xs]
            micro = []
            lr = tu.lr_at(step, train, total_steps, deadline.progress())
            tu.set_lr(opt_g, lr)
            tu.set_lr(opt_d, lr)
            vq_mix = min(1.0, step / vq_warmup) if vq_warmup > 0 else 1.0
            use_gan = step >= lw.gan_start_step
            logs = defaultdict(float)
            passes = [None] * accum  # generator passes (y, codes, latents, commitment, codebook)
            f0_targets.clear()

            # Gradient accumulation keeps one optimizer step = one batch of batch_size * accum clips:
            # each micro-batch's loss is scaled by 1 / accum and DDP averages only on the last one.
            # 1. Discriminators first, on the detached reconstructions of every micro-batch, one step.
            #    With accum > 1 the generator passes are rehearsed without gradients (same random
            #    quantizer dropout, no usage counts) and redone in 2., where the generator meets the
            #    updated discriminators as it does with accum = 1: the same algorithm at any accum.
            if use_gan:
                opt_d.zero_grad(set_to_none=True)
                with tu.rehearsal(model, rt.device) if accum > 1 else contextlib.nullcontext():
                    for k in range(accum):
                        if accum == 1:
                            with rt.autocast():
                                passes[k] = generate(gen, xs[k], vq_mix, k)
                            fake = passes[k][0].float().detach()
                        else:
                            with torch.no_grad(), rt.autocast():
                                fake = generate(model, xs[k], vq_mix, k)[0].float()
                        with tu.sync_gradients(dis, k == accum - 1):
                            with rt.autocast():
                                loss_d = discriminator_loss(dis(fake), dis(targets[k]))
                            (loss_d / accum).backward()
                        logs["loss_d"] += loss_d.item() / accum
                logs["grad_norm_d"] = torch.nn.utils.clip_grad_norm_(disc.parameters(), cfg.discriminator.grad_clip).item()
                opt_d.step()

            # 2. Generator: mel and VQ losses, and with the GAN on, adversarial + feature matching.
            opt_g.zero_grad(set_to_none=True)
            for k in range(accum):
                with tu.sync_gradients(gen, k == accum - 1):
                    if passes[k] is None:
                        with rt.autocast():
                            passes[k] = generate(gen, xs[k], vq_mix, k)
                    y, codes, latents, commitment, codebook = passes[k]
                    y = y.float()
                    loss_mel = mel_loss(y, targets[k]) if lw.mel_weight > 0 else y.new_zeros(())
                    loss = lw.mel_weight * loss_mel + cfg.codec.commitment_weight * commitment + cfg.codec.codebook_weight * codebook
                    if lw.stft_weight > 0:  # the source_filter decoder's main loss (hn-NSF)
                        loss_stft = stft_loss(y, targets[k])
                        loss = loss + lw.stft_weight * loss_stft
                        logs["stft"] += loss_stft.item() / accum
                    if model.source_filter:  # dense: the decoded envelope against the analysed one
                        decoded_env, analysed_env = model.last_envelope
                        loss_env = (decoded_env - analysed_env).abs().mean()
                        loss = loss + lw.envelope_weight * loss_env
                        logs["envelope"] += loss_env.item() / accum
                    if lw.waveform_weight > 0:  # EnCodec's time-domain L1: pins the phase the mel loss ignores
                        loss_wave = (y - targets[k]).abs().mean()
                        loss = loss + lw.waveform_weight * loss_wave
                        logs["waveform"] += loss_wave.item() / accum
                    if getattr(model.decoder, "harmonic", None) is not None:  # the oscillator's pitch, against YIN's
                        loss_f0 = f0_loss(model.decoder.harmonic.last_f0, f0_targets[k])
                        loss = loss + lw.f0_weight * loss_f0
                        logs["f0_octaves"] += loss_f0.item() / accum
                    if lw.phase_weight > 0:  # phase coherence without a discriminator (cheap on a CPU)
                        loss_phase = phase_loss(y, targets[k])
                        loss = loss + lw.phase_weight * loss_phase
                        logs["phase"] += loss_phase.item() / accum
                    if use_gan:
                        with tu.frozen(disc), rt.autocast():
                            with torch.no_grad():  # real features are only targets for feature matching
                                d_real = critic(targets[k])
                            adv, feat = generator_losses(critic(y), d_real)
                        loss = loss + lw.adv_weight * adv + lw.feat_weight * feat
                        logs["adv"] += adv.item() / accum
                        logs["feat"] += feat.item() / accum
                    (loss / accum).backward()
                passes[k] = None  # the next micro-batch's graph must not share memory with this one
                for name, value in (("loss", loss), ("mel", loss_mel), ("commitment", commitment), ("codebook", codebook)):
                    logs[name] += value.item() / accum
            logs["grad_norm_g"] = torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip).item()
            opt_g.step()

            if step % 100 == 0 and step >= vq_warmup // 2 and not args.decoder_only:
                # (on the last micro-batch's latents)
                restarted = 0
                for vq, z_e in zip(model.quantizer.quantizers, latents):
                    restarted += vq.restart_dead_codes(z_e, cfg.codec.dead_code_threshold)
                    if rt.ddp:  # every rank must keep the same codebooks
                        dist.broadcast(vq.codebook.weight.data, 0)
                        dist.broadcast(vq.usage, 0)
                logs["dead_codes_restarted"] = restarted

            step += 1
            batch_in_epoch += accum
            elapsed += time.time() - t0
            logs.update(lr=lr, vq_mix=vq_mix)
            bar.update(1)
            bar.set_postfix(mel=f"{logs['mel']:.3f}", stft=f"{logs.get('stft', 0):.3f}", d=f"{logs.get('loss_d', 0):.2f}")
            if writer and step % train.log_every_steps == 0:
                for k, v in logs.items():
                    writer.add_scalar(f"train/{k}", v, step)
                for i, vq in enumerate(model.quantizer.quantizers):
                    p = vq.usage / vq.usage.sum()
                    writer.add_scalar(f"codes/entropy_bits_{i}", float(-(p * (p + 1e-12).log2()).sum()), step)
            if rt.is_main and val_clips and step % train.eval_every_steps == 0:
                metrics = validate(model, val_clips, mel_loss, rt.device, sorted({1, cfg.codec.n_codebooks // 2, cfg.codec.n_codebooks}))
                tqdm.write(f"step {step} val " + " ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
                if writer:
                    for k, v in metrics.items():
                        writer.add_scalar(f"val/{k}", v, step)
                    with torch.no_grad():
                        model.eval()
                        clip = val_clips[0].to(rt.device)[None, None]
                        rec = model.decode(model.encode(clip))[0, 0, model.delay:].cpu().numpy()
                        model.train()
                    writer.add_audio("val/reconstruction", rec, step, sample_rate=cfg.codec.sample_rate)
                    writer.add_audio("val/original", val_clips[0].numpy(), step, sample_rate=cfg.codec.sample_rate)
                    writer.add_image("val/mel_reconstruction", mel_image(rec, cfg.codec.sample_rate), step)
            if step % train.save_every_steps == 0:
                save()
            if step >= total_steps or deadline.passed(rt):
                done = True
                break
        else:
            epoch += 1
            batch_in_epoch = 0
            if train.save_every and epoch % train.save_every == 0:
                save()
    bar.close()
    save()
    if rt.is_main:
        final = out_dir / "codec.safetensors"
        ckio.export_safetensors(model.state_dict(), final, cfg, fp16=False)
        if args.export:
            ckio.export_safetensors(model.state_dict(), args.export, cfg, fp16=True,
                                  metadata={"step": step, "elapsed_s": round(elapsed)})
        print(f"done at step {step} ({elapsed / 60:.1f} min of training): {final}")
        if writer:
            writer.close()
    tu.cleanup(rt)


if __name__ == "__main__":
    sys.exit(main())
