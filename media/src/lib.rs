//! hush-media: RTP/SRTP sessions, the ZRTP wrapper around libbzrtp, codecs, the jitter
//! buffer and audio devices. The call issue fills it; nothing here touches sockets.
#![warn(missing_docs, unreachable_pub)]
