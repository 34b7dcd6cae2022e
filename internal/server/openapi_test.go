package server_test

import (
	"os"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/server"
)

// openAPIPaths reads the paths section of docs/openapi.yaml with a small
// line scanner (no YAML library): path keys are indented two spaces, their
// operations four, and an operation's fields six. It returns, for each
// path, its operations (lower-case method) and each one's
// x-coffer-permission, in the order they appear.
func openAPIPaths(t *testing.T, file string) (order []string, ops map[string]map[string]*string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ops = map[string]map[string]*string{}
	inPaths := false
	var path, method string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, " \r")
		if strings.Contains(line, "\t") {
			t.Errorf("%s:%d: tab in YAML", file, i+1)
		}
		if line == "" || strings.HasPrefix(strings.TrimLeft(line, " "), "#") {
			continue
		}
		if !strings.HasPrefix(line, " ") { // a top-level key
			inPaths = line == "paths:"
			path, method = "", ""
			continue
		}
		if !inPaths {
			continue
		}
		switch {
		case strings.HasPrefix(line, "  /"):
			if !strings.HasSuffix(line, ":") {
				t.Errorf("%s:%d: path line %q is not a key", file, i+1, line)
				continue
			}
			path, method = strings.TrimSuffix(line[2:], ":"), ""
			if _, dup := ops[path]; dup {
				t.Errorf("%s:%d: path %s listed twice", file, i+1, path)
			}
			ops[path] = map[string]*string{}
			order = append(order, path)
		case path != "" && strings.HasPrefix(line, "    ") && !strings.HasPrefix(line, "     "):
			// A key of the path item: an operation, or a field shared by
			// its operations (parameters, summary, …).
			key, _, _ := strings.Cut(line[4:], ":")
			method = ""
			if !httpMethods[key] {
				continue
			}
			if line[4:] != key+":" {
				t.Errorf("%s:%d: operation line %q is not a key", file, i+1, line)
				continue
			}
			method = key
			if _, dup := ops[path][method]; dup {
				t.Errorf("%s:%d: %s %s listed twice", file, i+1, method, path)
			}
			ops[path][method] = nil
		case path != "" && method != "" && strings.HasPrefix(line, "      x-coffer-permission:"):
			v := strings.TrimSpace(strings.TrimPrefix(line, "      x-coffer-permission:"))
			v = strings.Trim(v, `"'`)
			ops[path][method] = &v
		case !strings.HasPrefix(line, "    "):
			// Anything else at two spaces in paths: not a path.
			t.Errorf("%s:%d: unexpected line in paths: %q", file, i+1, line)
		}
	}
	if len(order) == 0 {
		t.Fatalf("%s: no paths found", file)
	}
	return order, ops
}

// httpMethods are the operation keys of an OpenAPI path item.
var httpMethods = map[string]bool{
	"get": true, "put": true, "post": true, "delete": true,
	"options": true, "head": true, "patch": true, "trace": true,
}

// TestOpenAPIListsEveryRoute keeps docs/openapi.yaml and the route table
// equal: every route is described under its path and method with its
// permission, and every path described is a route.
func TestOpenAPIListsEveryRoute(t *testing.T) {
	const file = "../../docs/openapi.yaml"
	_, ops := openAPIPaths(t, file)

	// Routes only builds the table (method values; nothing is
	// dereferenced until a handler runs), so a zero Server will do.
	routes := new(server.Server).Routes()
	if len(routes) == 0 {
		t.Fatal("no routes")
	}
	routePaths := map[string]bool{}
	for _, rt := range routes {
		method, path, ok := strings.Cut(rt.Pattern(), " ")
		if !ok || method == "" || !strings.HasPrefix(path, "/") {
			t.Errorf("route pattern %q is not METHOD /path", rt.Pattern())
			continue
		}
		routePaths[path] = true
		pathOps, ok := ops[path]
		if !ok {
			t.Errorf("%s: no path key %q for route %s", file, "  "+path+":", rt.Pattern())
			continue
		}
		perm, ok := pathOps[strings.ToLower(method)]
		if !ok {
			t.Errorf("%s: path %s has no %q operation for route %s", file, path, strings.ToLower(method)+":", rt.Pattern())
			continue
		}
		if perm == nil {
			t.Errorf("%s: %s has no x-coffer-permission (want %q)", file, rt.Pattern(), rt.Permission())
		} else if *perm != string(rt.Permission()) {
			t.Errorf("%s: %s has x-coffer-permission %q, the route needs %q", file, rt.Pattern(), *perm, rt.Permission())
		}
	}
	for path, pathOps := range ops {
		if !routePaths[path] {
			t.Errorf("%s: path %s is not a route", file, path)
			continue
		}
		for method := range pathOps {
			if !routeHas(routes, strings.ToUpper(method)+" "+path) {
				t.Errorf("%s: %s %s is not a route", file, strings.ToUpper(method), path)
			}
		}
	}
}

func routeHas(routes []server.Route, pattern string) bool {
	for _, rt := range routes {
		if rt.Pattern() == pattern {
			return true
		}
	}
	return false
}
