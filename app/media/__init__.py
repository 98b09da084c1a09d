"""Images and audio in the composer: attachment state, the tray, drag-and-drop and paste, the microphone."""
