//! Every word the customer reads on the locker's screen, in one place: change the wording (or
//! translate it) here without touching the logic.

use hal::display::Screen;

/// What the locker wants to tell the person in front of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Idle,
    Checking,
    CellOpen { cell: u16 },
    PickupDone { cell: u16 },
    Rejected { reason: String },
    AlreadyUsed,
    Unavailable,
    OutOfOrder { detail: String },
}

/// The screen for a message.
pub fn render(m: &Message) -> Screen {
    let (title, lines): (&str, Vec<String>) = match m {
        Message::Idle => (
            "SkyPost parcel locker",
            vec!["Hold your QR code up to the camera.".into()],
        ),
        Message::Checking => ("One moment", vec!["Checking your code...".into()]),
        Message::CellOpen { cell } => (
            "Your cell is open",
            vec![
                format!("Cell {cell} is open."),
                "Take your parcel and close the door.".into(),
            ],
        ),
        Message::PickupDone { cell } => (
            "Thank you",
            vec![format!("Cell {cell} is closed. Enjoy your parcel!")],
        ),
        Message::Rejected { reason } => (
            "Code not accepted",
            vec![reason.clone(), "Contact support if this is wrong.".into()],
        ),
        Message::AlreadyUsed => (
            "Code already used",
            vec!["This code has already opened its cell.".into()],
        ),
        Message::Unavailable => (
            "Sorry",
            vec![
                "We cannot check your code right now.".into(),
                "Please try again in a minute.".into(),
            ],
        ),
        Message::OutOfOrder { detail } => (
            "Out of order",
            vec![
                "This locker cannot open cells right now.".into(),
                detail.clone(),
            ],
        ),
    };
    Screen {
        title: title.into(),
        lines,
    }
}

/// A rejection reason for the screen when the backend gave none.
pub const DEFAULT_REJECTION: &str = "This code is not valid for this locker.";
