"""Downstream readers on small folders in each dataset's real layout, with real (espeak-ng) speech: what each
reads, and one DatasetError naming the file for each kind of bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import soundfile as sf

from braintune_dist.downstream.readers import (COMMANDS, EMOTIONS, read_crema_d, read_speech_commands, read_slurp,
                                               read_task)
from braintune_dist.downstream.tasks import SAMPLE_RATE, load_clip
from braintune_dist.downstream.timit import FOLD_61_TO_39, PHONE_CLASSES, PHONES_39, PHONES_61, read_timit
from braintune_dist.errors import DatasetError

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    """Prepared clips, each synthesised once: 'raw' (espeak-ng's 22.05 kHz WAV), 'wav' (16 kHz WAV),
    'sph' (16 kHz NIST SPHERE), 'flac' (16 kHz FLAC), 'empty' (a WAV with 0 frames), 'junk' (not audio)."""
    d = tmp_path_factory.mktemp("voice")
    subprocess.run(["espeak-ng", "-w", str(d / "raw.wav"), "yes"], check=True, capture_output=True)
    x = load_clip(d / "raw.wav")
    sf.write(d / "wav.wav", x, SAMPLE_RATE, subtype="PCM_16")
    sf.write(d / "sph.sph", x, SAMPLE_RATE, format="NIST", subtype="PCM_16")
    sf.write(d / "flac.flac", x, SAMPLE_RATE, format="FLAC")
    sf.write(d / "empty.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    (d / "junk.bin").write_bytes(b"\x13\x37 not audio at all " * 20)
    return {"raw": d / "raw.wav", "wav": d / "wav.wav", "sph": d / "sph.sph", "flac": d / "flac.flac",
            "empty": d / "empty.wav", "junk": d / "junk.bin"}


def put(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def speakers_of(task, split):
    return {task.speakers[i] for i in task.indices(split)}


def assert_speaker_disjoint(task):
    tr, va, te = (speakers_of(task, s) for s in ("train", "validation", "test"))
    assert tr and va and te and not (tr & va) and not (tr & te) and not (va & te)


# ------------------------------------------------------------------ TIMIT

TIMIT_SPEAKERS = {"TRAIN": {"DR1": ["FCJF0", "MDAB0", "FAKS0"], "DR2": ["MRCZ0", "FJEM0"]},
                  "TEST": {"DR1": ["MDAW1", "FELC0"]}}
TIMIT_UTTS = {"SA1": ["h#", "sh", "iy", "hv", "ae", "dcl", "d", "h#"],
              "SI648": ["h#", "ix", "zh", "q", "pcl", "p", "ao", "epi", "h#"],
              "SX108": ["h#", "dh", "ax", "el", "en", "pau", "axr", "h#"]}
SI_PHONES = {"ih", "sh", "p", "aa"}        # SI648 folded, 'sil' and the dropped q not among them


def build_timit(root, voice, lower=False, copies=False):
    """TRAIN (5 speakers) and TEST (2), each speaker SA1, SI648, SX108 (.WAV SPHERE, .PHN, .WRD, .TXT)."""
    case = str.lower if lower else str
    for part, regions in TIMIT_SPEAKERS.items():
        for dr, speakers in regions.items():
            for spk in speakers:
                d = root / case(part) / case(dr) / case(spk)
                for utt, phones in TIMIT_UTTS.items():
                    put(voice["sph"], d / case(f"{utt}.WAV"))
                    if copies:
                        put(voice["wav"], d / case(f"{utt}.WAV.wav"))
                    (d / case(f"{utt}.PHN")).write_text("".join(f"{400 * i} {400 * i + 400} {p}\n"
                                                                for i, p in enumerate(phones)))
                    (d / case(f"{utt}.WRD")).write_text("400 2000 yes\n")
                    (d / case(f"{utt}.TXT")).write_text(f"0 {400 * len(phones)} Yes, {utt} said {spk}.\n")
    return root


def test_timit_phone_sets():
    assert len(PHONES_61) == 61 and len(PHONES_39) == 39 and "sil" in PHONES_39
    assert len(PHONE_CLASSES) == 38 and "sil" not in PHONE_CLASSES
    assert FOLD_61_TO_39["q"] is None and FOLD_61_TO_39["h#"] == FOLD_61_TO_39["bcl"] == "sil"


def test_timit_phonemes(tmp_path, voice):
    task = read_timit(build_timit(tmp_path / "TIMIT", voice, copies=True) / "..")
    assert task.name == "timit_phonemes" and task.multi_label and task.classes == PHONE_CLASSES
    assert task.n_clips == 7 * 2 and task.targets.shape == (14, 38)        # SA left out by default
    assert all(f.endswith(".WAV") for f in task.files)                      # SPHERE preferred to the RIFF copy
    si = [i for i, f in enumerate(task.files) if f.endswith("SI648.WAV")]
    assert {PHONE_CLASSES[j] for j in np.flatnonzero(task.targets[si[0]])} == SI_PHONES
    assert_speaker_disjoint(task)
    assert speakers_of(task, "test") == {"MDAW1", "FELC0"} and len(speakers_of(task, "validation")) == 1
    assert task.texts[si[0]] == f"Yes, SI648 said {task.speakers[si[0]]}."
    assert read_timit(tmp_path, include_sa=True).n_clips == 21


def test_timit_sentence_type_lower_case(tmp_path, voice):
    task = read_timit(build_timit(tmp_path, voice, lower=True), "sentence_type", val_speakers=["FAKS0"])
    assert task.classes == ("SA", "SI", "SX") and task.n_clips == 21 and not task.multi_label
    assert [task.classes[t] for t in task.targets[:3]] == ["SA", "SI", "SX"]
    assert speakers_of(task, "validation") == {"FAKS0"}
    assert_speaker_disjoint(task)
    with pytest.raises(DatasetError, match=r"val_speakers: unknown speaker\(s\) \['NOBODY'\]"):
        read_timit(tmp_path, "sentence_type", val_speakers=["NOBODY"])


def test_timit_unknown_phone(tmp_path, voice):
    phn = build_timit(tmp_path, voice) / "TRAIN" / "DR2" / "FJEM0" / "SX108.PHN"
    phn.write_text("0 400 h#\n400 800 dh\n800 1200 xx\n")
    with pytest.raises(DatasetError, match=r"FJEM0/SX108\.PHN, line 3: unknown phone 'xx'"):
        read_timit(tmp_path)


def test_timit_unreadable_audio(tmp_path, voice):
    put(voice["junk"], build_timit(tmp_path, voice) / "TEST" / "DR1" / "FELC0" / "SI648.WAV")
    with pytest.raises(DatasetError, match=r"FELC0/SI648\.WAV: unreadable audio"):
        read_timit(tmp_path)


# ------------------------------------------------------------------ Speech Commands v2

def build_commands(root, voice):
    """35 word folders; speaker 'aaaa1111' train (two clips a word), 'bbbb2222' validation, 'cccc3333' test."""
    for word in COMMANDS:
        for name in ("aaaa1111_nohash_0", "aaaa1111_nohash_1", "bbbb2222_nohash_0", "cccc3333_nohash_0"):
            put(voice["wav"], root / word / f"{name}.wav")
    put(voice["wav"], root / "_background_noise_" / "white_noise.wav")
    (root / "README.md").write_text("speech commands\n")
    (root / "validation_list.txt").write_text("".join(f"{w}/bbbb2222_nohash_0.wav\n" for w in COMMANDS))
    (root / "testing_list.txt").write_text("".join(f"{w}/cccc3333_nohash_0.wav\n" for w in COMMANDS))
    return root


def test_speech_commands(tmp_path, voice):
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # 16 kHz: nothing to resample, no warning
        task = read_speech_commands(build_commands(tmp_path, voice))
    assert task.name == "commands" and task.classes == COMMANDS and len(COMMANDS) == 35
    assert task.n_clips == 35 * 4 and [len(task.indices(s)) for s in ("train", "validation", "test")] == [70, 35, 35]
    assert all(f"/{task.classes[t]}/" in f and task.texts[i] == task.classes[t]
               for i, (f, t) in enumerate(zip(task.files, task.targets)))
    assert speakers_of(task, "validation") == {"bbbb2222"} and speakers_of(task, "test") == {"cccc3333"}
    assert_speaker_disjoint(task)
    assert not any("_background_noise_" in f for f in task.files)


def test_speech_commands_missing_list(tmp_path, voice):
    (build_commands(tmp_path, voice) / "testing_list.txt").unlink()
    with pytest.raises(DatasetError, match=r"missing .*testing_list\.txt"):
        read_speech_commands(tmp_path)


def test_speech_commands_list_entry_missing(tmp_path, voice):
    (build_commands(tmp_path, voice) / "bird" / "bbbb2222_nohash_0.wav").unlink()
    with pytest.raises(DatasetError, match=r"validation_list\.txt, line 3: 'bird/bbbb2222_nohash_0\.wav': no such"):
        read_speech_commands(tmp_path)


def test_speech_commands_unknown_folder(tmp_path, voice):
    put(voice["wav"], build_commands(tmp_path, voice) / "dogs" / "aaaa1111_nohash_0.wav")
    with pytest.raises(DatasetError, match=r"dogs: folder 'dogs' is not one of the 35"):
        read_speech_commands(tmp_path)


def test_speech_commands_empty_audio(tmp_path, voice):
    put(voice["empty"], build_commands(tmp_path, voice) / "wow" / "aaaa1111_nohash_2.wav")
    with pytest.raises(DatasetError, match=r"wow/aaaa1111_nohash_2\.wav: empty audio"):
        read_speech_commands(tmp_path)


def test_speech_commands_speaker_in_two_splits(tmp_path, voice):
    with open(build_commands(tmp_path, voice) / "testing_list.txt", "a") as fh:
        fh.write("yes/aaaa1111_nohash_0.wav\n")
    with pytest.raises(DatasetError, match=r"speaker 'aaaa1111' has clips in both the train and the test split"):
        read_speech_commands(tmp_path)


def test_speech_commands_one_class_train(tmp_path, voice):
    build_commands(tmp_path, voice)
    for w in COMMANDS[1:]:                                 # only 'backward' keeps training clips
        for f in (tmp_path / w).glob("aaaa1111_*.wav"):
            f.unlink()
    with pytest.raises(DatasetError, match=r"'commands' \(.*\): the train split has one class only"):
        read_speech_commands(tmp_path)


# ------------------------------------------------------------------ CREMA-D

CREMA_ACTORS = [str(a) for a in range(1001, 1011)]


def build_crema(root, voice, audio="raw"):
    """AudioWAV/ with 10 actors × 6 emotions (DFA, XX), 22.05 kHz by default, plus the empty 1076_MTI_SAD_XX."""
    for actor in CREMA_ACTORS:
        for emotion in EMOTIONS:
            put(voice[audio], root / "AudioWAV" / f"{actor}_DFA_{emotion}_XX.wav")
    put(voice["empty"], root / "AudioWAV" / "1076_MTI_SAD_XX.wav")
    return root


def test_crema_d_resampled(tmp_path, voice):
    with pytest.warns(UserWarning) as caught:
        task = read_crema_d(build_crema(tmp_path, voice))
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and "60 of 60 audio files are stored at 22050 Hz" in msgs[0]     # once, not per file
    assert task.classes == EMOTIONS and task.n_clips == 60 and task.texts[0] == "Don't forget a jacket"
    assert all(f.endswith(f"_{EMOTIONS[t]}_XX.wav") for f, t in zip(task.files, task.targets))
    assert [len(speakers_of(task, s)) for s in ("train", "validation", "test")] == [7, 1, 2]
    assert_speaker_disjoint(task)
    raw, sr = sf.read(voice["raw"])
    x = load_clip(task.files[0])
    assert sr == 22050 and x.dtype == np.float32 and abs(len(x) - len(raw) * SAMPLE_RATE / sr) <= 1
    with pytest.warns(UserWarning, match="22050 Hz"):
        again = read_crema_d(tmp_path, val_actors=["1003"], test_actors=[1004, 1005])      # actor ids as int too
    assert speakers_of(again, "validation") == {"1003"} and speakers_of(again, "test") == {"1004", "1005"}
    with pytest.raises(DatasetError, match=r"test_actors: speaker\(s\) \['1003'\] are already held out"):
        read_crema_d(tmp_path, val_actors=["1003"], test_actors=["1003"])
    with pytest.raises(DatasetError, match=r"val_actors: 1\.5 is neither a fraction in \(0, 1\) nor a count"):
        read_crema_d(tmp_path, val_actors=1.5)
    with pytest.raises(DatasetError, match=r"test_actors=9 holds out 9 of the 9 speakers left"):
        read_crema_d(tmp_path, test_actors=9)


def test_crema_d_bad_names(tmp_path, voice):
    build_crema(tmp_path, voice, audio="wav")
    bad = put(voice["wav"], tmp_path / "AudioWAV" / "1002_DFA_XYZ_XX.wav")
    with pytest.raises(DatasetError, match=r"1002_DFA_XYZ_XX\.wav: unknown emotion code 'XYZ'"):
        read_crema_d(tmp_path)
    bad.rename(tmp_path / "AudioWAV" / "hello.wav")
    with pytest.raises(DatasetError, match=r"hello\.wav: not a CREMA-D name"):
        read_crema_d(tmp_path / "AudioWAV" / "..")


def test_crema_d_bad_audio(tmp_path, voice):
    build_crema(tmp_path, voice, audio="wav")
    with pytest.raises(DatasetError, match=r"1076_MTI_SAD_XX\.wav: empty audio"):
        read_crema_d(tmp_path, exclude=())                       # left out by default: it holds no audio
    put(voice["junk"], tmp_path / "AudioWAV" / "1005_DFA_HAP_XX.wav")
    with pytest.raises(DatasetError, match=r"1005_DFA_HAP_XX\.wav: unreadable audio"):
        read_crema_d(tmp_path)
    (tmp_path / "AudioWAV" / "1005_DFA_HAP_XX.wav").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(DatasetError, match=r"1005_DFA_HAP_XX\.wav: unreadable audio.*git lfs pull"):
        read_crema_d(tmp_path)


# ------------------------------------------------------------------ SLURP

def slurp_record(sid, scenario, action, takes, intent=None):
    recs = [{"file": f"audio-{t}{mic}.flac", "wer": 0.0, "ent_wer": 0.0, "status": "correct"}
            for t in takes for mic in ("-headset", "")]
    return {"slurp_id": sid, "sentence": f"{scenario} {action} please", "intent": intent or f"{scenario}_{action}",
            "action": action, "scenario": scenario, "recordings": recs}


SLURP_DATA = {
    "train": [slurp_record(1, "alarm", "set", [1490105458]), slurp_record(2, "weather", "query", [1490105460]),
              slurp_record(3, "alarm", "query", [1490105462, -1504194195])],
    "devel": [slurp_record(4, "alarm", "set", [1490105470])],
    "test": [slurp_record(5, "weather", "query", [1490105480], intent="query")],   # the field's quirk
}


def build_slurp(root, voice, data=SLURP_DATA):
    """A SLURP repository: dataset/slurp/{train,devel,test}.jsonl, metadata.json, audio/slurp_real/*.flac."""
    d = root / "dataset" / "slurp"
    d.mkdir(parents=True)
    meta = {}
    for split, records in data.items():
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        for r in records:
            meta[str(r["slurp_id"])] = {"recordings": {x["file"]: {"usrid": f"FE-{r['slurp_id']:03d}"}
                                                       for x in r["recordings"]}}
            for x in r["recordings"]:
                put(voice["flac"], root / "audio" / "slurp_real" / x["file"])
    (d / "metadata.json").write_text(json.dumps(meta))
    return root


def test_slurp(tmp_path, voice):
    task = read_slurp(build_slurp(tmp_path, voice))
    assert task.name == "slurp_action" and task.classes == ("query", "set")         # from train only
    assert task.n_clips == 12 and [len(task.indices(s)) for s in ("train", "validation", "test")] == [8, 2, 2]
    assert task.files[0].endswith("audio/slurp_real/audio-1490105458-headset.flac") and task.speakers[0] == "FE-001"
    assert task.texts[0] == "alarm set please" and list(task.targets[:2]) == [1, 1]
    intent = read_task("SLURP", tmp_path / "dataset" / "slurp", label="intent", mics="headset")
    assert intent.classes == ("alarm_query", "alarm_set", "weather_query") and intent.n_clips == 6
    assert intent.classes[intent.targets[-1]] == "weather_query"          # scenario_action, not the 'query' field
    (tmp_path / "dataset" / "slurp" / "metadata.json").unlink()
    assert read_slurp(tmp_path).speakers[6] == "audio--1504194195"          # the take, without metadata


def test_slurp_label_not_in_train(tmp_path, voice):
    data = dict(SLURP_DATA, devel=[slurp_record(4, "alarm", "set", [1490105470]),
                                   slurp_record(6, "alarm", "remove", [1490105490])])
    build_slurp(tmp_path, voice, data)
    with pytest.raises(DatasetError, match=r"devel\.jsonl, line 2: action 'remove' never occurs in .*train\.jsonl"):
        read_slurp(tmp_path)


def test_slurp_bad_json_and_missing_files(tmp_path, voice):
    build_slurp(tmp_path, voice)
    (tmp_path / "audio" / "slurp_real" / "audio-1490105480.flac").unlink()
    with pytest.raises(DatasetError, match=r"slurp_real/audio-1490105480\.flac: missing audio file"):
        read_slurp(tmp_path)
    train = tmp_path / "dataset" / "slurp" / "train.jsonl"
    lines = train.read_text().splitlines()
    train.write_text(lines[0] + "\n" + lines[1][:-5] + "\n")
    with pytest.raises(DatasetError, match=r"train\.jsonl, line 2: not valid JSON"):
        read_slurp(tmp_path)
    train.unlink()
    with pytest.raises(DatasetError, match=r"missing .*dataset/slurp/train\.jsonl"):
        read_slurp(tmp_path)


# ------------------------------------------------------------------ dispatch

def test_read_task(tmp_path, voice):
    build_crema(tmp_path, voice, audio="wav")
    assert read_task("CREMA-D", tmp_path, test_actors=3).name == "crema_d"
    with pytest.raises(DatasetError, match=r"unknown downstream dataset 'iemocap'"):
        read_task("iemocap", tmp_path)
    with pytest.raises(DatasetError, match=r"crema_d: unknown option\(s\) val_speakers"):
        read_task("crema_d", tmp_path, val_speakers=2)
