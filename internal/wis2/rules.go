package wis2

import (
	"encoding/json"
	"fmt"
	"math/big"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// rules applies the WNM JSON Schema (wis2-notification-message-bundled.json as of FT2025-2,
// draft 2020-12 with format assertion) written out in Go. Each method mirrors one subschema;
// the comments name the schema location. The tests run every fixture through this and through
// the official schema and require the same verdict.
type rules struct {
	details []Detail
}

func (r *rules) fail(path, format string, args ...any) {
	r.details = append(r.details, Detail{Path: path, Message: fmt.Sprintf(format, args...)})
}

// sub runs f on a fresh collector and reports whether it passed (for oneOf branches).
func sub(f func(r *rules)) bool {
	var s rules
	f(&s)
	return len(s.details) == 0
}

func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number:
		if isInteger(v) {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "unknown"
}

func isInteger(n json.Number) bool {
	rat, ok := new(big.Rat).SetString(string(n))
	return ok && rat.IsInt()
}

func numberGreater(n json.Number, limit int64) bool {
	rat, ok := new(big.Rat).SetString(string(n))
	return ok && rat.Cmp(new(big.Rat).SetInt64(limit)) > 0
}

func isNumber(v any) bool { _, ok := v.(json.Number); return ok }

// want checks a "type" keyword; t may be "number" (which includes integers).
func (r *rules) want(path string, v any, t string) bool {
	got := jsonType(v)
	if got == t || t == "number" && got == "integer" {
		return true
	}
	r.fail(path, "want %s, got %s", t, got)
	return false
}

func (r *rules) optString(path string, obj map[string]any, key string) (string, bool) {
	v, ok := obj[key]
	if !ok {
		return "", false
	}
	if !r.want(path+"/"+key, v, "string") {
		return "", false
	}
	return v.(string), true
}

func (r *rules) required(path string, obj map[string]any, keys ...string) {
	for _, k := range keys {
		if _, ok := obj[k]; !ok {
			r.fail(path, "missing property %q", k)
		}
	}
}

// message is the root schema.
func (r *rules) message(doc any) {
	obj, ok := doc.(map[string]any)
	if !ok {
		r.want("", doc, "object")
		return
	}
	if s, ok := r.optString("", obj, "id"); ok && !validUUID(s) {
		r.fail("/id", "%q is not a valid uuid", s)
	}
	if v, ok := obj["conformsTo"]; ok && r.want("/conformsTo", v, "array") {
		found := false
		for _, c := range v.([]any) {
			if s, ok := c.(string); ok && s == ConformanceCore {
				found = true
			}
		}
		if !found {
			r.fail("/conformsTo", "no item equals %q", ConformanceCore)
		}
	}
	if s, ok := r.optString("", obj, "version"); ok && s != "v04" {
		r.fail("/version", "must be \"v04\"")
	}
	if s, ok := r.optString("", obj, "type"); ok && s != "Feature" {
		r.fail("/type", "must be \"Feature\"")
	}
	if g, ok := obj["geometry"]; ok {
		r.geometry(g)
	}
	if p, ok := obj["properties"]; ok {
		r.properties(p)
	}
	if l, ok := obj["links"]; ok {
		r.links(l)
	}
	// Root oneOf: the conformsTo form or the deprecated version form, not both.
	_, hasConforms := obj["conformsTo"]
	_, hasVersion := obj["version"]
	r.required("", obj, "id", "type", "geometry", "properties", "links")
	switch {
	case hasConforms && hasVersion:
		r.fail("", "oneOf: both conformsTo and the deprecated version are present")
	case !hasConforms && !hasVersion:
		r.fail("", "missing property \"conformsTo\"")
	}
}

// geometry is #/properties/geometry: oneOf null, Point, Polygon.
func (r *rules) geometry(g any) {
	if g == nil {
		return
	}
	point := sub(func(s *rules) { s.geometryObject(g, "Point", 0) })
	polygon := sub(func(s *rules) { s.geometryObject(g, "Polygon", 2) })
	if point == polygon { // both cannot pass (the type enums differ), so this is "none"
		r.fail("/geometry", "must be null, a Point or a Polygon")
	}
}

// geometryObject checks {type, coordinates} with coordinates nested depth arrays deep around
// the position arrays (Point 0, Polygon 2: rings of positions).
func (r *rules) geometryObject(g any, typ string, depth int) {
	obj, ok := g.(map[string]any)
	if !ok {
		r.want("/geometry", g, "object")
		return
	}
	r.required("/geometry", obj, "type", "coordinates")
	if s, ok := r.optString("/geometry", obj, "type"); ok && s != typ {
		r.fail("/geometry/type", "must be %q", typ)
	}
	if c, ok := obj["coordinates"]; ok {
		r.coordinates("/geometry/coordinates", c, depth)
	}
}

func (r *rules) coordinates(path string, c any, depth int) {
	if !r.want(path, c, "array") {
		return
	}
	arr := c.([]any)
	switch depth {
	case 0: // position: minItems 2, numbers
		if len(arr) < 2 {
			r.fail(path, "minItems 2")
		}
		for i, x := range arr {
			if !isNumber(x) {
				r.fail(fmt.Sprintf("%s/%d", path, i), "want number, got %s", jsonType(x))
			}
		}
	case 1: // ring: minItems 4 positions
		if len(arr) < 4 {
			r.fail(path, "minItems 4")
		}
		for i, x := range arr {
			r.coordinates(fmt.Sprintf("%s/%d", path, i), x, 0)
		}
	default: // polygon: rings
		for i, x := range arr {
			r.coordinates(fmt.Sprintf("%s/%d", path, i), x, depth-1)
		}
	}
}

// properties is #/properties/properties.
func (r *rules) properties(p any) {
	const path = "/properties"
	obj, ok := p.(map[string]any)
	if !ok {
		r.want(path, p, "object")
		return
	}
	for _, k := range []string{"pubtime", "start_datetime", "end_datetime"} {
		if s, ok := r.optString(path, obj, k); ok && !validDateTime(s) {
			r.fail(path+"/"+k, "%q is not a valid date-time", s)
		}
	}
	for _, k := range []string{"data_id", "metadata_id", "producer", "global-cache"} {
		r.optString(path, obj, k)
	}
	if v, ok := obj["datetime"]; ok {
		switch v := v.(type) {
		case nil:
		case string:
			if !validDateTime(v) {
				r.fail(path+"/datetime", "%q is not a valid date-time", v)
			}
		default:
			r.fail(path+"/datetime", "want string or null, got %s", jsonType(v))
		}
	}
	if v, ok := obj["cache"]; ok {
		r.want(path+"/cache", v, "boolean")
	}
	if v, ok := obj["integrity"]; ok && r.want(path+"/integrity", v, "object") {
		m := v.(map[string]any)
		if s, ok := r.optString(path+"/integrity", m, "method"); ok {
			switch s {
			case "sha256", "sha384", "sha512", "sha3-256", "sha3-384", "sha3-512":
			default:
				r.fail(path+"/integrity/method", "%q is not a known method", s)
			}
		}
		r.optString(path+"/integrity", m, "value")
		r.required(path+"/integrity", m, "method", "value")
	}
	if v, ok := obj["content"]; ok && r.want(path+"/content", v, "object") {
		m := v.(map[string]any)
		if s, ok := r.optString(path+"/content", m, "encoding"); ok {
			switch s {
			case "utf-8", "base64", "gzip":
			default:
				r.fail(path+"/content/encoding", "%q is not utf-8, base64 or gzip", s)
			}
		}
		if sz, ok := m["size"]; ok && r.want(path+"/content/size", sz, "integer") && numberGreater(sz.(json.Number), MaxInlineContent) {
			r.fail(path+"/content/size", "maximum %d", MaxInlineContent)
		}
		if s, ok := r.optString(path+"/content", m, "value"); ok && utf8.RuneCountInString(s) > MaxInlineContent {
			r.fail(path+"/content/value", "maxLength %d", MaxInlineContent)
		}
		r.required(path+"/content", m, "encoding", "size", "value")
	}
	r.required(path, obj, "pubtime", "data_id")
	// oneOf: start_datetime+end_datetime, or datetime.
	_, hasStart := obj["start_datetime"]
	_, hasEnd := obj["end_datetime"]
	_, hasDT := obj["datetime"]
	interval := hasStart && hasEnd
	switch {
	case interval && hasDT:
		r.fail(path, "oneOf: datetime and start_datetime/end_datetime are both present")
	case !interval && !hasDT:
		r.fail(path, "oneOf: neither datetime nor start_datetime and end_datetime")
	}
}

// links is #/properties/links.
func (r *rules) links(l any) {
	if !r.want("/links", l, "array") {
		return
	}
	arr := l.([]any)
	if len(arr) < 1 {
		r.fail("/links", "minItems 1")
	}
	for i, item := range arr {
		path := fmt.Sprintf("/links/%d", i)
		obj, ok := item.(map[string]any)
		if !ok {
			r.want(path, item, "object")
			continue
		}
		r.required(path, obj, "rel", "href")
		for _, k := range []string{"rel", "type", "hreflang", "title", "href"} {
			r.optString(path, obj, k)
		}
		if v, ok := obj["length"]; ok {
			r.want(path+"/length", v, "integer")
		}
		if v, ok := obj["security"]; ok && r.want(path+"/security", v, "object") {
			for name, scheme := range v.(map[string]any) {
				if !securityName.MatchString(name) {
					continue // patternProperties only constrains matching names
				}
				p := path + "/security/" + name
				ref := sub(func(s *rules) { s.reference(p, scheme) })
				sch := sub(func(s *rules) { s.securityScheme(p, scheme) })
				if ref == sch {
					if ref {
						r.fail(p, "oneOf: both a Reference and a SecurityScheme")
					} else {
						r.fail(p, "not a valid Reference or SecurityScheme")
					}
				}
			}
		}
	}
}

var securityName = regexp.MustCompile(`^[a-zA-Z0-9.\-_]+$`)

// reference is #/definitions/Schema_Reference.
func (r *rules) reference(path string, v any) {
	obj, ok := v.(map[string]any)
	if !ok {
		r.want(path, v, "object")
		return
	}
	r.required(path, obj, "$ref")
	if s, ok := r.optString(path, obj, "$ref"); ok && !validURIReference(s) {
		r.fail(path+"/$ref", "not a uri-reference")
	}
}

// securityScheme is #/definitions/Schema_SecurityScheme: oneOf the four OpenAPI schemes.
func (r *rules) securityScheme(path string, v any) {
	n := 0
	for _, f := range []func(*rules){
		func(s *rules) { s.apiKeyScheme(path, v) },
		func(s *rules) { s.httpScheme(path, v) },
		func(s *rules) { s.oauth2Scheme(path, v) },
		func(s *rules) { s.openIDScheme(path, v) },
	} {
		if sub(f) {
			n++
		}
	}
	if n != 1 {
		r.fail(path, "oneOf: matches %d security schemes", n)
	}
}

// closedObject checks "type object, properties ..., patternProperties ^x-, additionalProperties
// false" and returns the object.
func (r *rules) closedObject(path string, v any, allowed ...string) map[string]any {
	obj, ok := v.(map[string]any)
	if !ok {
		r.want(path, v, "object")
		return nil
	}
	for k := range obj {
		if strings.HasPrefix(k, "x-") {
			continue
		}
		found := false
		for _, a := range allowed {
			if k == a {
				found = true
			}
		}
		if !found {
			r.fail(path, "additional property %q not allowed", k)
		}
	}
	return obj
}

func (r *rules) enumString(path string, obj map[string]any, key string, values ...string) {
	v, ok := obj[key]
	if !ok {
		return
	}
	s, isStr := v.(string)
	if !isStr {
		r.fail(path+"/"+key, "want string, got %s", jsonType(v))
		return
	}
	for _, e := range values {
		if s == e {
			return
		}
	}
	r.fail(path+"/"+key, "must be one of %v", values)
}

func (r *rules) uriRef(path string, obj map[string]any, key string) {
	if s, ok := r.optString(path, obj, key); ok && !validURIReference(s) {
		r.fail(path+"/"+key, "not a uri-reference")
	}
}

func (r *rules) apiKeyScheme(path string, v any) {
	obj := r.closedObject(path, v, "type", "name", "in", "description")
	if obj == nil {
		return
	}
	r.required(path, obj, "type", "name", "in")
	r.enumString(path, obj, "type", "apiKey")
	r.optString(path, obj, "name")
	r.enumString(path, obj, "in", "header", "query", "cookie")
	r.optString(path, obj, "description")
}

func (r *rules) httpScheme(path string, v any) {
	obj := r.closedObject(path, v, "scheme", "bearerFormat", "description", "type")
	if obj == nil {
		return
	}
	r.required(path, obj, "scheme", "type")
	r.optString(path, obj, "scheme")
	r.optString(path, obj, "bearerFormat")
	r.optString(path, obj, "description")
	r.enumString(path, obj, "type", "http")
	// oneOf: "Bearer" (scheme, if present, is "bearer") or "Non Bearer" (no bearerFormat, and
	// scheme, if present, is not "bearer"). Enum comparison is by JSON value.
	scheme, hasScheme := obj["scheme"]
	isBearer := hasScheme && scheme == "bearer"
	_, hasFormat := obj["bearerFormat"]
	bearer := !hasScheme || isBearer
	nonBearer := !hasFormat && (!hasScheme || !isBearer)
	if bearer == nonBearer {
		r.fail(path, "oneOf: bearer and non-bearer forms both or neither match")
	}
}

func (r *rules) oauth2Scheme(path string, v any) {
	obj := r.closedObject(path, v, "type", "flows", "description")
	if obj == nil {
		return
	}
	r.required(path, obj, "type", "flows")
	r.enumString(path, obj, "type", "oauth2")
	r.optString(path, obj, "description")
	f, ok := obj["flows"]
	if !ok {
		return
	}
	fp := path + "/flows"
	flows := r.closedObject(fp, f, "implicit", "password", "clientCredentials", "authorizationCode")
	if flows == nil {
		return
	}
	for name, flow := range flows {
		p := fp + "/" + name
		var req []string
		switch name {
		case "implicit":
			req = []string{"authorizationUrl", "scopes"}
		case "password", "clientCredentials":
			req = []string{"tokenUrl"}
		case "authorizationCode":
			req = []string{"authorizationUrl", "tokenUrl"}
		default:
			continue // x- extension
		}
		allowed := []string{"refreshUrl", "scopes"}
		switch name {
		case "implicit":
			allowed = append(allowed, "authorizationUrl")
		case "password", "clientCredentials":
			allowed = append(allowed, "tokenUrl")
		case "authorizationCode":
			allowed = append(allowed, "authorizationUrl", "tokenUrl")
		}
		m := r.closedObject(p, flow, allowed...)
		if m == nil {
			continue
		}
		r.required(p, m, req...)
		for _, k := range []string{"authorizationUrl", "tokenUrl", "refreshUrl"} {
			r.uriRef(p, m, k)
		}
		if sc, ok := m["scopes"]; ok && r.want(p+"/scopes", sc, "object") {
			for k, s := range sc.(map[string]any) {
				r.want(p+"/scopes/"+k, s, "string")
			}
		}
	}
}

func (r *rules) openIDScheme(path string, v any) {
	obj := r.closedObject(path, v, "type", "openIdConnectUrl", "description")
	if obj == nil {
		return
	}
	r.required(path, obj, "type", "openIdConnectUrl")
	r.enumString(path, obj, "type", "openIdConnect")
	r.uriRef(path, obj, "openIdConnectUrl")
	r.optString(path, obj, "description")
}

// validUUID is the "uuid" format: 8-4-4-4-12 hexadecimal digits (any version, either case).
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// validDateTime is the "date-time" format of RFC 3339 section 5.6: full-date "T" full-time,
// where "T" and "Z" may be lower case, the seconds may be 60 only for a leap second at
// 23:59 UTC, and the offset is Z or +hh:mm / -hh:mm.
func validDateTime(s string) bool {
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':' {
		return false
	}
	year, ok1 := digits(s[0:4])
	month, ok2 := digits(s[5:7])
	day, ok3 := digits(s[8:10])
	hour, ok4 := digits(s[11:13])
	minute, ok5 := digits(s[14:16])
	sec, ok6 := digits(s[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return false
	}
	if month < 1 || month > 12 || day < 1 || day > daysIn(year, month) {
		return false
	}
	if hour > 23 || minute > 59 || sec > 60 {
		return false
	}
	rest := s[19:]
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		if n == 1 {
			return false
		}
		rest = rest[n:]
	}
	offset := 0 // minutes east of UTC
	switch {
	case rest == "Z" || rest == "z":
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, okh := digits(rest[1:3])
		om, okm := digits(rest[4:6])
		if !okh || !okm || oh > 23 || om > 59 {
			return false
		}
		offset = oh*60 + om
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return false
	}
	if sec == 60 {
		utc := ((hour*60+minute-offset)%(24*60) + 24*60) % (24 * 60)
		if utc != 23*60+59 {
			return false
		}
	}
	return true
}

func digits(s string) (int, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// validURIReference is the "uri-reference" format as Go's URL parser reads it (no backslash;
// an IPv6 host in brackets).
func validURIReference(s string) bool {
	if strings.Contains(s, `\`) {
		return false
	}
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	if h := u.Hostname(); strings.Contains(h, ":") {
		if !strings.Contains(u.Host, "[") || !strings.Contains(u.Host, "]") {
			return false
		}
	}
	return true
}
