package dedup

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// rueidis retries a failed cluster-topology refresh after a delay in
	// a goroutine of its own (singleflight DelayDo), which Close does not
	// wait for: it sleeps out its delay (under a second) and ends. Not a
	// leak of ours; everything else must be gone.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"))
}
