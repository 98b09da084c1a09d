"""The `lantern` command line: streams an answer with a stats line, and fails with one clear line."""

import subprocess
import sys

from conftest import FIXTURES, MODELS
from engine.cli import main


def test_generate_streams_an_answer_and_prints_stats(capsys):
    code = main(["generate", "--model", str(MODELS / "tiny-e2b"), "--prompt", "Hello", "--max-tokens", "6",
                 "--temp", "0", "--image", str(FIXTURES / "media" / "image_wide.png"),
                 "--audio", str(FIXTURES / "media" / "audio_16k.wav"), "--image-budget", "70"])
    captured = capsys.readouterr()
    assert code == 0
    assert "prompt " in captured.err and "TTFT" in captured.err and "decode" in captured.err
    assert "peak memory" in captured.err


def test_errors_print_one_line_and_exit_non_zero(tmp_path, capsys):
    code = main(["generate", "--model", str(tmp_path / "missing"), "--prompt", "Hi"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.count("\n") == 0 and err.startswith("lantern: ") and "does not exist" in err


def test_audio_on_a_model_without_an_audio_tower_is_refused(capsys):
    code = main(["generate", "--model", str(MODELS / "tiny-31b"), "--prompt", "Hi",
                 "--audio", str(FIXTURES / "media" / "audio_16k.wav")])
    assert code == 1
    assert "no audio tower" in capsys.readouterr().err


def test_chat_reads_turns_until_end_of_input():
    result = subprocess.run([sys.executable, "-m", "engine.cli", "chat", "--model", str(MODELS / "tiny-e2b"),
                             "--max-tokens", "4", "--temp", "0"], input="Hello\nAgain\n", capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    assert result.stderr.count("TTFT") == 2
    assert "(0 cached)" in result.stderr and "(0 cached)" not in result.stderr.split("TTFT")[1]


def test_chat_commands_never_reach_the_model_and_a_double_slash_sends_a_slash():
    result = subprocess.run([sys.executable, "-m", "engine.cli", "chat", "--model", str(MODELS / "tiny-e2b"),
                             "--max-tokens", "4", "--temp", "0"], input="/help\n/qiut\n//regen\n",
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert result.stderr.count("//text to send /text") == 3   # the greeting, /help and /qiut
    assert "/qiut is not a command" in result.stderr
    # Only "//regen" became a turn, and as the message "/regen": regenerating now would fail, nothing to answer.
    assert result.stderr.count("TTFT") == 1 and "nothing to regenerate" not in result.stderr
