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

pub use call::Resolver;
pub use command::{Command, Reply};
pub use event::{Event, MAKE_OTR_KEY};
pub use phone::Phone;
pub use snapshot::Snapshot;
