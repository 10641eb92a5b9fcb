//! The info file's writer: a thread of the locker that writes, fsyncs and renames the held record
//! once the locker hands it over (while the lock is held), and hands the result back through the
//! locker's inbox (`crate::inbox`). The locker waits for it before `acquired`, alongside its
//! signals, so a stop request releases the lock even while a write hangs on a frozen or stalled
//! filesystem. (freeze marks the info file `freezing` before the locker may lock.)
//!
//! It touches only the info file, never the server or the state file. A writer that was never
//! handed an info file removes its temporary file before the locker exits.
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use crate::inbox::Inbox;
use common::info_file::{InfoFile, PendingInfoFile};
use common::Result;

pub(crate) struct InfoWriter {
    to_writer: Option<Sender<InfoFile>>,
    thread: Option<JoinHandle<()>>,
    handed_over: bool,
    /// Where the outcome of the write arrives, for [`Inbox::wait_for`].
    written: Receiver<Result<()>>,
}

impl InfoWriter {
    /// Starts the writer of `pending`: it waits for the held record (its outcome wakes `inbox`,
    /// and waits in [`InfoWriter::written`]).
    pub(crate) fn start(pending: PendingInfoFile, inbox: &Inbox) -> InfoWriter {
        let (done, written) = inbox.reply();
        let (to_writer, from_locker) = mpsc::channel::<InfoFile>();
        let thread = std::thread::spawn(move || {
            // Disconnected without an info file: `pending` is dropped, removing its temporary.
            if let Ok(info) = from_locker.recv() {
                done.send(pending.commit(&info));
            }
        });
        InfoWriter {
            to_writer: Some(to_writer),
            thread: Some(thread),
            handed_over: false,
            written,
        }
    }

    /// Hands `info` to the writer; its outcome arrives in [`InfoWriter::written`].
    pub(crate) fn write(&mut self, info: InfoFile) {
        if let Some(to_writer) = self.to_writer.take() {
            self.handed_over = to_writer.send(info).is_ok();
        }
    }

    /// Where the outcome of the write arrives (once [`InfoWriter::write`] handed it over).
    pub(crate) fn written(&self) -> &Receiver<Result<()>> {
        &self.written
    }
}

impl Drop for InfoWriter {
    fn drop(&mut self) {
        self.to_writer = None;
        // A writer with an info file may be stuck on the filesystem: never wait for it.
        if !self.handed_over {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
