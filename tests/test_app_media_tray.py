"""Drop, paste and pick media into the composer; the tray's budgets and token counts; capability gating."""

import threading

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QFileOpenEvent, QGuiApplication, QImage, QKeySequence
from PySide6.QtWidgets import QApplication, QDialog, QLabel, QPlainTextEdit

import engine
from app.media.attachments import AUTO, Attachments, ImageAttachment
from app.media.controls import MediaControls
from app.media.drop import MediaDrop
from app.media.recorder import Recorder
from app.media.tray import AttachmentTray, ImageCard
from engine.vision import BUDGETS, open_image, soft_token_count, to_rgb
from tests.conftest import FIXTURES, MODELS

MEDIA = FIXTURES / "media"


@pytest.fixture
def composer(qtbot):
    attachments = Attachments()
    box = QPlainTextEdit()
    tray = AttachmentTray(attachments)
    drop = MediaDrop(attachments)
    drop.install(box)
    errors = []
    drop.error.connect(errors.append)
    for widget in (box, tray):
        qtbot.addWidget(widget)
    box.show()
    return attachments, box, tray, drop, errors


def drop_on(widget, mime: QMimeData) -> QDropEvent:
    """A drag entering `widget` and dropped there, as the window system delivers it."""
    where, action = QPointF(5.5, 5.5), Qt.DropAction.CopyAction
    buttons, modifiers = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(where.toPoint(), action, mime, buttons, modifiers)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    event = QDropEvent(where, action, mime, buttons, modifiers)
    QApplication.sendEvent(widget, event)
    return event


def finish_reading(qtbot, drop: MediaDrop) -> None:
    """Dropped and opened files are read on worker threads; the GUI thread attaches them when ready."""
    assert drop.busy
    qtbot.waitUntil(lambda: not drop.busy, timeout=10000)


def file_urls(*paths) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path)) for path in paths])
    return mime


def test_dropping_image_data_on_the_input_box_adds_a_card(composer):
    attachments, box, tray, _, errors = composer
    mime = QMimeData()
    mime.setImageData(QImage(str(MEDIA / "image_wide.png")))
    event = drop_on(box.viewport(), mime)
    assert event.isAccepted() and errors == []
    assert [item.name for item in attachments.items] == ["Pasted image 1.png"]
    assert attachments.items[0].size == (64, 48)
    assert len(tray.cards) == 1 and isinstance(tray.cards[0], ImageCard) and not tray.isHidden()
    assert tray.cards[0].tokens_label.text() == f"{attachments.items[0].tokens} tokens"
    assert box.toPlainText() == ""  # nothing was typed into the box


def test_dropping_file_urls_attaches_images_and_audio_in_order(qtbot, composer):
    attachments, box, tray, drop, errors = composer
    drop_on(box.viewport(), file_urls(MEDIA / "image_wide.png", MEDIA / "audio_16k.wav", MEDIA / "image_tall.png"))
    finish_reading(qtbot, drop)
    assert errors == []
    assert [item.name for item in attachments.items] == ["image_wide.png", "audio_16k.wav", "image_tall.png"]
    assert [type(card).__name__ for card in tray.cards] == ["ImageCard", "AudioChip", "ImageCard"]
    assert "audio_16k.wav · 0:" in tray.cards[1].label.text()
    assert tray.summary.text().startswith(f"2 image(s): {attachments.image_tokens} tokens")


def test_paste_shortcut_takes_a_screenshot_from_the_clipboard_but_leaves_text_to_the_box(qtbot, composer):
    attachments, box, tray, _, _ = composer
    clipboard = QGuiApplication.clipboard()
    clipboard.setText("just words")
    box.setFocus()
    qtbot.keySequence(box, QKeySequence.StandardKey.Paste)
    assert box.toPlainText() == "just words" and attachments.items == []
    clipboard.setImage(QImage(str(MEDIA / "image_tall.png")))
    qtbot.keySequence(box, QKeySequence.StandardKey.Paste)
    assert [item.size for item in attachments.items] == [(40, 80)]
    assert box.toPlainText() == "just words"


def test_changing_the_budget_changes_the_token_count(qtbot, composer):
    attachments, box, tray, drop, _ = composer
    drop.attach_paths([MEDIA / "image_wide.png"])
    card = tray.cards[0]
    seen = {}
    for index, choice in enumerate((*BUDGETS, AUTO)):
        card.budget_combo.setCurrentIndex(index)
        assert tray.cards[0] is card  # refreshed in place, not rebuilt
        seen[choice] = card.tokens_label.text()
        budget = card.item.auto if choice == AUTO else choice
        assert seen[choice] == f"{soft_token_count(64, 48, budget)} tokens"
    assert len({seen[b] for b in BUDGETS}) == len(BUDGETS)
    assert card.budget_combo.itemText(len(BUDGETS)) == f"Auto ({card.item.auto})"


def test_model_view_preview_shows_the_downscaled_image(qtbot, composer):
    attachments, _, tray, drop, _ = composer
    drop.attach_paths([MEDIA / "image_tall.png"])
    attachments.set_budget(attachments.items[0], 70)
    dialog = tray.cards[0].preview_dialog()
    qtbot.addWidget(dialog)
    picture = dialog.findChild(QLabel)
    assert isinstance(dialog, QDialog) and (picture.pixmap().width(), picture.pixmap().height()) == \
        attachments.items[0].model_size
    assert f"{attachments.items[0].tokens} tokens" in dialog.windowTitle()


@pytest.mark.parametrize("name", ["exif_rotated_60x40.jpg", "gray16_90x70.png"])
def test_the_card_thumbnail_is_upright_and_8_bit_as_the_model_sees_it(composer, name):
    attachments, _, tray, drop, _ = composer
    drop.attach_paths([FIXTURES / "images" / name])
    shown = tray.cards[0].thumb.pixmap().toImage().convertToFormat(QImage.Format.Format_RGB888)
    width, height = attachments.items[0].size  # upright
    assert (shown.width() > shown.height()) == (width > height)
    upright = to_rgb(open_image(FIXTURES / "images" / name)).resize((shown.width(), shown.height()))
    pixels = np.frombuffer(shown.constBits(), np.uint8).reshape(shown.height(), shown.bytesPerLine())
    pixels = pixels[:, :3 * shown.width()].reshape(shown.height(), shown.width(), 3).astype(int)
    assert np.abs(pixels - np.asarray(upright, dtype=int)).mean() < 8


def test_files_are_read_off_the_gui_thread_and_attached_in_the_order_given(qtbot, composer, monkeypatch):
    attachments, _, tray, drop, _ = composer
    release = threading.Event()
    decode = attachments.decode_path

    def slow_for_the_first(path):
        if path.name == "image_wide.png":
            assert release.wait(10), "never released"
        return decode(path)

    monkeypatch.setattr(attachments, "decode_path", slow_for_the_first)
    readings = []
    drop.reading.connect(readings.append)
    drop.read_paths([MEDIA / "image_wide.png", MEDIA / "image_tall.png"])   # returns while the first is held
    assert drop.busy and attachments.items == []
    assert readings[-1] == "Reading image_wide.png, image_tall.png…"
    qtbot.wait(200)   # the second is read by now, but waits for the first
    assert attachments.items == [] and drop.busy
    release.set()
    qtbot.waitUntil(lambda: not drop.busy, timeout=10000)
    assert [item.name for item in attachments.items] == ["image_wide.png", "image_tall.png"]
    assert readings[-1] == "" and len(tray.cards) == 2


def test_heic_photos_are_decoded_by_the_system_where_it_can_and_explained_where_it_cannot(composer, tmp_path):
    attachments, _, _, drop, errors = composer
    heic = tmp_path / "IMG_0001.HEIC"   # an iPhone photo's header; Qt here has no HEIC reader
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    assert drop.attach_paths([heic]) == 0
    assert errors == ["IMG_0001.HEIC is a HEIC photo, which Lantern cannot decode here; export it as JPEG or PNG "
                      "(in Preview: File → Export) and attach that"]
    readable = tmp_path / "photo.heic"   # what the system reader hands over where it can read HEIC
    readable.write_bytes((MEDIA / "image_wide.png").read_bytes())
    assert drop.attach_paths([readable]) == 1
    item = attachments.items[0]
    assert item.name == "photo.heic" and item.data is not None
    assert item.image.convert("RGB").tobytes() == open_image(MEDIA / "image_wide.png").convert("RGB").tobytes()


def test_unreadable_files_are_named_without_their_folder(composer, tmp_path):
    _, _, _, drop, errors = composer
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "blank.jpg").write_bytes(b"")
    drop.attach_paths([tmp_path / "notes.png", tmp_path / "blank.jpg"])
    assert errors == ["notes.png is not an image Lantern can read (it reads PNG, JPEG, WebP, GIF, BMP and TIFF)",
                      "blank.jpg is empty (0 bytes), not an image"]


def test_remove_button_and_errors_for_broken_files(qtbot, composer, tmp_path):
    attachments, box, tray, drop, errors = composer
    broken = tmp_path / "scan.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    fake = tmp_path / "memo.wav"
    fake.write_text("Dear diary, today I recorded nothing.\n")
    drop_on(box.viewport(), file_urls(broken, fake, MEDIA / "image_wide.png"))
    finish_reading(qtbot, drop)
    assert len(errors) == 2
    assert errors[0].startswith("scan.jpg is ") and ("damaged" in errors[0] or "not an image" in errors[0])
    assert errors[1] == "memo.wav is not an audio file: it holds text"
    assert [item.name for item in attachments.items] == ["image_wide.png"]
    card = tray.cards[0]
    qtbot.mouseClick(card.remove_button, Qt.MouseButton.LeftButton)
    assert attachments.items == [] and tray.cards == [] and tray.isHidden() and card.isHidden()


def test_file_open_event_on_the_application_attaches(qtbot, composer):
    attachments, _, _, drop, _ = composer
    drop.install_file_open(QApplication.instance())
    try:
        QApplication.sendEvent(QApplication.instance(), QFileOpenEvent(str(MEDIA / "image_tall.png")))
    finally:
        QApplication.instance().removeEventFilter(drop)
    finish_reading(qtbot, drop)
    assert [item.name for item in attachments.items] == ["image_tall.png"]
    assert attachments.items[0].image.tobytes() == open_image(MEDIA / "image_tall.png").tobytes()


def test_mic_is_disabled_with_the_reason_on_a_model_without_audio(qtbot, composer):
    attachments, box, tray, drop, errors = composer
    drop.attach_paths([MEDIA / "audio_16k.wav", MEDIA / "image_wide.png"])
    controls = MediaControls(attachments, Recorder())
    qtbot.addWidget(controls)
    info = engine.load(MODELS / "tiny-31b").info
    assert "audio" not in info.modalities
    notes = controls.set_model(info.modalities, info.variant)
    expected = f"Audio needs Gemma 4 E2B or E4B; this model ({info.variant}) has no audio tower"
    for button in (controls.mic_button, controls.dictate_button):
        assert not button.isEnabled() and button.toolTip() == expected
    assert controls.attach_button.isEnabled()
    assert notes == [f"audio_16k.wav removed: {expected[0].lower() + expected[1:]}"]
    assert [type(item) for item in attachments.items] == [ImageAttachment]
    drop_on(box.viewport(), file_urls(MEDIA / "audio_16k.wav"))
    finish_reading(qtbot, drop)
    assert errors == [expected]

    e2b = engine.load(MODELS / "tiny-e2b").info
    controls.set_model(e2b.modalities, e2b.variant)
    assert controls.mic_button.isEnabled() and "Record" in controls.mic_button.toolTip()
