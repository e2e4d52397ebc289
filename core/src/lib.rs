//! hush-core: the phone without a face. Accounts, the profile store, call and chat
//! orchestration and the security-state model, driven through [`Command`]s and observed
//! through [`Event`]s and [`Snapshot`]s by the window, the CLI and the tests alike.
#![warn(missing_docs, unreachable_pub)]

mod call;
mod chat;
pub mod error;
pub mod model;
pub mod profile;
pub mod secret;
pub mod security;

pub use error::{CoreError, Result};
pub use model::{AccountConfig, AccountId, AccountSettings, NewAccount, Protocol};
pub use profile::Profile;
pub use secret::Secret;
pub use security::{CallSecurity, ChatSecurity};
pub mod command;
pub mod event;
pub mod phone;
pub mod snapshot;

pub use call::{CallPictures, Resolver};
pub use command::{Command, Reply};
pub use event::{Event, MAKE_OTR_KEY};
/// A picture of a video call, as [`CallPictures`] holds it.
pub use hush_media::camera::CameraInfo;
pub use hush_media::video::I420Frame;
pub use phone::Phone;
pub use snapshot::Snapshot;
