"""What the tray promises is what the model gets: a message with two images (and a clip) sent to tiny-e2b."""

import engine
from app.media.attachments import Attachments
from app.media.drop import MediaDrop
from app.media.tray import AttachmentTray
from tests.conftest import FIXTURES, MODELS

MEDIA = FIXTURES / "media"


def test_prompt_image_and_audio_tokens_equal_the_tray_counts(qtbot):
    model = engine.load(MODELS / "tiny-e2b")
    attachments = Attachments(model.info.modalities, model.info.variant)
    tray = AttachmentTray(attachments)
    qtbot.addWidget(tray)
    MediaDrop(attachments).attach_paths([MEDIA / "image_wide.png", MEDIA / "image_tall.png", MEDIA / "audio_16k.wav"])
    for card in tray.cards[:2]:
        card.budget_combo.setCurrentIndex(card.budget_combo.findData(140))
    assert attachments.budgets == [140, 140]
    promised = [int(card.tokens_label.text().split()[0]) for card in tray.cards[:2]]

    images, audio = attachments.engine_media()
    session = model.chat(image_budget=140, max_tokens=2, temperature=0.0)
    events = list(session.send("What is in these pictures and this sound?", images=images, audio=audio))
    stats = events[-1].stats  # counted from the placeholder runs of the prompt the model was given
    assert events[-1].kind == "done"
    assert stats.image_tokens == sum(promised) == attachments.image_tokens > 0
    assert stats.audio_tokens == attachments.audio_tokens > 0


def test_composer_draft_files_store_pasted_images_and_recordings_losslessly(qtbot, tmp_path):
    from PySide6.QtGui import QImage
    from PySide6.QtWidgets import QWidget

    import numpy as np
    from app.media.composer import MediaComposer
    from engine.audio import read_audio
    from engine.vision import open_image

    window = QWidget()
    qtbot.addWidget(window)
    composer = MediaComposer(window)
    composer.drop.attach_paths([MEDIA / "image_wide.png"])
    composer.drop.attach_image(QImage(str(MEDIA / "image_tall.png")))
    tone = (0.3 * np.sin(np.arange(16_000) * 0.1)).astype(np.float32)
    with qtbot.waitSignal(composer.recorded):
        composer.recorder.finished.emit(tone, "ask")
    composer.attachments.set_budget(composer.attachments.images[0], 560)
    composer.attachments.set_budget(composer.attachments.images[1], 70)

    images, audio = composer.draft_files(tmp_path / "media")
    assert images[0] == [str(MEDIA / "image_wide.png"), 560]   # each image keeps its own budget
    assert images[1][0].startswith(str(tmp_path / "media")) and images[1][1] == 70
    assert open_image(images[1][0]).tobytes() == open_image(MEDIA / "image_tall.png").tobytes()
    assert np.array_equal(read_audio(audio[0]), tone)
    assert len(composer.attachments.items) == 3  # the window empties the tray once the message is stored
    with qtbot.waitSignal(composer.dictated) as dictated:
        composer.recorder.finished.emit(tone, "dictate")
    assert dictated.args[0] is tone and len(composer.attachments.items) == 3  # a dictation attaches nothing
