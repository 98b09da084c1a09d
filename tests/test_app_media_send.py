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
