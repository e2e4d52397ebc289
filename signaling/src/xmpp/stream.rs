//! Reading the next element of a raw XMPP stream, with soft timeouts skipped and every
//! other failure turned into tokio-xmpp's error type.

use futures::StreamExt;
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio_xmpp::error::Error;
use tokio_xmpp::xmlstream::{ReadError, XmppStream, XmppStreamElement};

/// The next element, or why there is none.
pub(crate) async fn next_element<S: AsyncBufRead + AsyncWrite + Unpin>(
    stream: &mut XmppStream<S>,
) -> Result<XmppStreamElement, Error> {
    loop {
        match stream
            .next()
            .await
            .map(|v| v.and_then(|v| v.into_read_error()))
        {
            Some(Ok(el)) => return Ok(el),
            Some(Err(ReadError::SoftTimeout)) => {}
            Some(Err(ReadError::HardError(e))) => return Err(e.into()),
            Some(Err(ReadError::ParseError(e))) => {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e).into());
            }
            None | Some(Err(ReadError::StreamFooterReceived)) => return Err(Error::Disconnected),
        }
    }
}
