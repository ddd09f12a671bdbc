package packet

import (
	"bytes"
	"testing"
)

func benchPublish() *Publish {
	return &Publish{QoS: 1, Topic: "sensors/building-7/floor-3/room-12/temperature", PacketID: 4711,
		Payload: bytes.Repeat([]byte{'x'}, 256),
		Props: withProps(Properties{PayloadFormatIndicator: 1, MessageExpiryInterval: 3600, ContentType: "text/plain",
			User: []UserProperty{{"source", "gateway-1"}}},
			PropPayloadFormatIndicator, PropMessageExpiryInterval, PropContentType, PropUserProperty)}
}

func BenchmarkDecodePublish(b *testing.B) {
	for _, v := range []byte{V311, V5} {
		b.Run(versionName(v), func(b *testing.B) {
			raw := benchPublish().Append(nil, v)
			h, n, _ := ParseFixedHeader(raw)
			body := raw[n:]
			var p Publish
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if err := DecodePublish(&p, h.Flags, body, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendPublish(b *testing.B) {
	for _, v := range []byte{V311, V5} {
		b.Run(versionName(v), func(b *testing.B) {
			p := benchPublish()
			buf := make([]byte, 0, p.Len(v))
			b.ReportAllocs()
			b.SetBytes(int64(p.Len(v)))
			for b.Loop() {
				buf = p.Append(buf[:0], v)
			}
		})
	}
}

func BenchmarkDecodeConnect(b *testing.B) {
	for _, v := range []byte{V311, V5} {
		b.Run(versionName(v), func(b *testing.B) {
			c := &Connect{ProtocolVersion: v, CleanStart: true, KeepAlive: 60, ClientID: "load-generator-client-000042",
				UsernameFlag: true, Username: "user", PasswordFlag: true, Password: []byte("secret"),
				WillFlag: true, WillQoS: 1, WillTopic: "clients/000042/status", WillPayload: []byte("offline")}
			if v == V5 {
				c.Props = withProps(Properties{SessionExpiryInterval: 300, ReceiveMaximum: 100,
					TopicAliasMaximum: 10}, PropSessionExpiryInterval, PropReceiveMaximum, PropTopicAliasMaximum)
				c.WillProps = withProps(Properties{WillDelayInterval: 5}, PropWillDelayInterval)
			}
			raw := c.Append(nil)
			h, n, _ := ParseFixedHeader(raw)
			body := raw[n:]
			var p Connect
			b.ReportAllocs()
			for b.Loop() {
				if err := DecodeConnect(&p, h.Flags, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseFixedHeader(b *testing.B) {
	raw := benchPublish().Append(nil, V5)
	b.ReportAllocs()
	for b.Loop() {
		if _, n, err := ParseFixedHeader(raw); n == 0 || err != nil {
			b.Fatal(n, err)
		}
	}
}

func BenchmarkValidString(b *testing.B) {
	s := "sensors/building-7/floor-3/room-12/temperature/\u00e9t\u00e9"
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		if !ValidString(s) {
			b.Fatal("invalid")
		}
	}
}
