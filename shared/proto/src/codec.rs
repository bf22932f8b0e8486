//! The generated servers' and clients' codec: tonic-prost's, except that a
//! message that does not decode (bad wire format, a string that is not UTF-8)
//! is INVALID_ARGUMENT rather than tonic-prost's INTERNAL. On a server the
//! message is the caller's request, so the fault is the caller's: answered as
//! INTERNAL it would read as the server failing, and a proxy's circuit breaker
//! in front of the server would count one client's garbage against everyone.

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] with decode failures as INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct SuiteCodec<T, U> {
    prost: ProstCodec<T, U>,
}

impl<T, U> Default for SuiteCodec<T, U> {
    fn default() -> Self {
        Self {
            prost: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for SuiteCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = SuiteDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SuiteDecoder {
            prost: self.prost.decoder(),
        }
    }
}

/// [`ProstDecoder`] whose decode failures are INVALID_ARGUMENT.
#[derive(Debug)]
pub struct SuiteDecoder<U> {
    prost: ProstDecoder<U>,
}

impl<U: prost::Message + Default> Decoder for SuiteDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.prost.decode(buf).map_err(|status| match status.code() {
            // tonic-prost's only error: the bytes are not a valid message of this type.
            Code::Internal => Status::invalid_argument(format!("the message is not valid protobuf: {}", status.message())),
            _ => status,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.prost.buffer_settings()
    }
}
