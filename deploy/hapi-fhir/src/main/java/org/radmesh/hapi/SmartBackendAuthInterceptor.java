package org.radmesh.hapi;

import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.api.RestOperationTypeEnum;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.server.RestfulServerUtils;
import com.nimbusds.jose.JOSEException;
import com.nimbusds.jose.JWSAlgorithm;
import com.nimbusds.jose.JWSHeader;
import com.nimbusds.jose.KeySourceException;
import com.nimbusds.jose.crypto.factories.DefaultJWSVerifierFactory;
import com.nimbusds.jose.jwk.JWK;
import com.nimbusds.jose.jwk.JWKSelector;
import com.nimbusds.jose.jwk.JWKSet;
import com.nimbusds.jose.jwk.source.JWKSource;
import com.nimbusds.jose.proc.JWSVerificationKeySelector;
import com.nimbusds.jose.proc.SecurityContext;
import com.nimbusds.jwt.JWTClaimsSet;
import com.nimbusds.jwt.SignedJWT;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.security.Key;
import java.text.ParseException;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.Date;
import java.util.EnumSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.stream.Collectors;
import org.hl7.fhir.r4.model.OperationOutcome;
import org.hl7.fhir.r4.model.OperationOutcome.IssueSeverity;
import org.hl7.fhir.r4.model.OperationOutcome.IssueType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * SMART Backend Services on the second port ({@link SmartBackendProperties#port()}): every request
 * arriving there, except {@code /fhir/metadata}, needs {@code Authorization: Bearer <JWT>} issued
 * by the development Keycloak. Requests on the open port are not looked at.
 *
 * <ul>
 *   <li>the signature is checked against the issuer's JWKS (fetched once, cached, fetched again
 *       when a token names a key the cache does not have, at most every {@value #REFETCH_SECONDS} s,
 *       and every {@value #JWKS_MAX_AGE_MINUTES} min);
 *   <li>{@code iss} must be the configured issuer, {@code exp} must not have passed (30 s leeway),
 *       {@code nbf}, when present, must have come;
 *   <li>a read (read, vread, search also by POST {@code _search}, history, paging, operations such
 *       as {@code $validate} or {@code $everything}) needs {@code system/*.rs} or
 *       {@code system/*.cruds}; a write (create, update, patch, delete, transaction and batch
 *       Bundles, tag and meta changes, and HAPI's state-changing operations such as
 *       {@code $expunge}) needs {@code system/*.cruds}.
 * </ul>
 *
 * <p>No token or a bad one: 401 with an OperationOutcome (issue code {@code login}) saying what
 * was wrong (never the token) and {@code WWW-Authenticate: Bearer}; a good token without the scope:
 * 403 (code {@code forbidden}) naming the scope needed. The issuer's keys cannot be fetched: 503.
 */
@Interceptor
public class SmartBackendAuthInterceptor {

	public static final String READ_SCOPE = "system/*.rs";
	public static final String WRITE_SCOPE = "system/*.cruds";

	static final long LEEWAY_SECONDS = 30;
	static final long REFETCH_SECONDS = 5;
	static final long JWKS_MAX_AGE_MINUTES = 10;
	static final String REALM = "radmesh-fhir";
	private static final String CLAIMS = SmartBackendAuthInterceptor.class.getName() + ".claims";

	/** Signature algorithms accepted on access tokens (Keycloak signs with RS256 by default). */
	static final Set<JWSAlgorithm> ALGORITHMS = Set.of(
			JWSAlgorithm.RS256, JWSAlgorithm.RS384, JWSAlgorithm.RS512,
			JWSAlgorithm.PS256, JWSAlgorithm.PS384, JWSAlgorithm.PS512,
			JWSAlgorithm.ES256, JWSAlgorithm.ES384, JWSAlgorithm.ES512);

	private static final Set<RestOperationTypeEnum> WRITES = EnumSet.of(
			RestOperationTypeEnum.CREATE, RestOperationTypeEnum.UPDATE, RestOperationTypeEnum.PATCH,
			RestOperationTypeEnum.DELETE, RestOperationTypeEnum.TRANSACTION, RestOperationTypeEnum.BATCH,
			RestOperationTypeEnum.ADD_TAGS, RestOperationTypeEnum.DELETE_TAGS, RestOperationTypeEnum.META_ADD,
			RestOperationTypeEnum.META_DELETE, RestOperationTypeEnum.UPDATE_REWRITE_HISTORY);

	private static final Set<RestOperationTypeEnum> OPERATIONS = EnumSet.of(
			RestOperationTypeEnum.EXTENDED_OPERATION_SERVER, RestOperationTypeEnum.EXTENDED_OPERATION_TYPE,
			RestOperationTypeEnum.EXTENDED_OPERATION_INSTANCE);

	/** Operations that change what the server stores: writes, although operations are reads. */
	static final Set<String> WRITING_OPERATIONS = Set.of(
			"$expunge", "$meta-add", "$meta-delete", "$reindex", "$mark-all-resources-for-reindexing",
			"$perform-reindexing-pass", "$process-message", "$trigger-subscription", "$import",
			"$binary-access-write", "$apply-codesystem-delta-add", "$apply-codesystem-delta-remove",
			"$upload-external-code-system", "$hapi.fhir.replace-references", "$hapi.fhir.undo-replace-references",
			"$merge", "$hapi.fhir.undo-merge", "$closure", "$invalidate-expansion", "$delete-expunge");

	private static final Logger LOG = LoggerFactory.getLogger(SmartBackendAuthInterceptor.class);

	private final SmartBackendProperties properties;
	private final CachedJwks jwks;
	private final JWSVerificationKeySelector<SecurityContext> keySelector;
	private final DefaultJWSVerifierFactory verifierFactory = new DefaultJWSVerifierFactory();

	public SmartBackendAuthInterceptor(SmartBackendProperties properties) {
		this.properties = properties;
		this.jwks = new CachedJwks(URI.create(properties.jwksUrl()));
		this.keySelector = new JWSVerificationKeySelector<>(ALGORITHMS, jwks);
		if (properties.enabled()) {
			LOG.info("SMART Backend Services: port {} needs access tokens of {} (keys {}; scopes {}, {})",
					properties.port(), properties.issuer(), properties.jwksUrl(), READ_SCOPE, WRITE_SCOPE);
		}
	}

	private boolean onSmartPort(HttpServletRequest request) {
		return properties.enabled() && request.getLocalPort() == properties.port();
	}

	/**
	 * Before HAPI picks a handler: the token, for every request on the SMART port but metadata.
	 * A refusal is written here and processing stops (HAPI would log a refusal thrown from a hook
	 * as an interceptor ERROR, with a stack trace).
	 */
	@Hook(value = Pointcut.SERVER_INCOMING_REQUEST_PRE_HANDLER_SELECTED, order = -1000)
	public boolean authenticate(RequestDetails requestDetails, HttpServletRequest request, HttpServletResponse response) {
		if (!onSmartPort(request) || "/metadata".equals(request.getPathInfo())) {
			return true;
		}
		try {
			requestDetails.getUserData().put(CLAIMS, authenticated(request));
			return true;
		} catch (Refusal refusal) {
			return refuse(refusal, requestDetails, request, response);
		}
	}

	/** After HAPI knows the operation, before request validation: the scope it needs. */
	@Hook(value = Pointcut.SERVER_INCOMING_REQUEST_POST_PROCESSED, order = -1000)
	public boolean authorize(RequestDetails requestDetails, HttpServletRequest request, HttpServletResponse response) {
		if (!onSmartPort(request)) {
			return true;
		}
		try {
			authorized(requestDetails, request);
			return true;
		} catch (Refusal refusal) {
			return refuse(refusal, requestDetails, request, response);
		}
	}

	private JWTClaimsSet authenticated(HttpServletRequest request) throws Refusal {
		List<String> headers = Collections.list(request.getHeaders("Authorization"));
		if (headers.isEmpty() || headers.get(0).isBlank()) {
			throw Refusal.unauthorized(null, "no access token: send 'Authorization: Bearer <access token>' with a"
					+ " token from " + properties.tokenUrl() + " (SMART Backend Services, scope " + READ_SCOPE
					+ " or " + WRITE_SCOPE + ")");
		}
		if (headers.size() > 1) {
			throw Refusal.unauthorized("invalid_request", "more than one Authorization header");
		}
		String header = headers.get(0).strip();
		if (!header.regionMatches(true, 0, "Bearer ", 0, 7)) {
			throw Refusal.unauthorized("invalid_request", "the Authorization header is not 'Bearer <access token>'");
		}
		return verify(header.substring(7).strip());
	}

	private void authorized(RequestDetails requestDetails, HttpServletRequest request) throws Refusal {
		RestOperationTypeEnum operation = requestDetails.getRestOperationType();
		if (operation == RestOperationTypeEnum.METADATA) {
			return;
		}
		if (!(requestDetails.getUserData().get(CLAIMS) instanceof JWTClaimsSet accessToken)) {
			throw Refusal.unauthorized(null, "no access token");
		}
		Set<String> granted = scopes(accessToken);
		boolean write = isWrite(operation, requestDetails, request);
		boolean allowed = write ? granted.contains(WRITE_SCOPE)
				: granted.contains(READ_SCOPE) || granted.contains(WRITE_SCOPE);
		if (!allowed) {
			throw Refusal.forbidden(write ? WRITE_SCOPE : READ_SCOPE, "this " + (write ? "write" : "read") + " ("
					+ describe(operation, requestDetails) + ") needs the scope "
					+ (write ? WRITE_SCOPE : READ_SCOPE + " or " + WRITE_SCOPE) + "; the access token grants "
					+ (granted.isEmpty() ? "no scope" : String.join(" ", granted)));
		}
	}

	static boolean isWrite(RestOperationTypeEnum operation, RequestDetails requestDetails, HttpServletRequest request) {
		String method = request.getMethod().toUpperCase(Locale.ROOT);
		if (method.equals("PUT") || method.equals("PATCH") || method.equals("DELETE")) {
			return true;
		}
		if (operation == null || WRITES.contains(operation)) {
			return true;
		}
		if (OPERATIONS.contains(operation)) {
			String name = requestDetails.getOperation();
			return name != null && WRITING_OPERATIONS.contains(name.toLowerCase(Locale.ROOT));
		}
		return false;
	}

	private static String describe(RestOperationTypeEnum operation, RequestDetails requestDetails) {
		StringBuilder text = new StringBuilder(operation == null ? "unknown" : operation.getCode());
		if (requestDetails.getResourceName() != null) {
			text.append(' ').append(requestDetails.getResourceName());
		}
		if (requestDetails.getOperation() != null && OPERATIONS.contains(operation)) {
			text.append(' ').append(requestDetails.getOperation());
		}
		return text.toString();
	}

	static Set<String> scopes(JWTClaimsSet claims) {
		Object scope = claims.getClaim("scope");
		Collection<?> values = scope instanceof String text ? Arrays.asList(text.trim().split("\\s+"))
				: scope instanceof Collection<?> list ? list : List.of();
		return values.stream().map(String::valueOf).filter(s -> !s.isEmpty())
				.collect(Collectors.toCollection(LinkedHashSet::new));
	}

	/** The access token's claims once its signature, issuer and lifetime are good. */
	JWTClaimsSet verify(String token) throws Refusal {
		SignedJWT jwt;
		try {
			jwt = SignedJWT.parse(token);
		} catch (ParseException e) {
			throw Refusal.invalidToken("the access token is not a signed JWT (compact JWS)");
		}
		JWSHeader header = jwt.getHeader();
		if (!ALGORITHMS.contains(header.getAlgorithm())) {
			throw Refusal.invalidToken("the access token is signed with an algorithm this server does not accept"
					+ " (it accepts RS256/384/512, PS256/384/512, ES256/384/512)");
		}
		List<Key> keys;
		try {
			keys = keySelector.selectJWSKeys(header, null);
		} catch (KeySourceException e) {
			throw new Refusal(503, IssueType.TRANSIENT, null, "the issuer's signing keys could not be fetched from "
					+ properties.jwksUrl() + ": " + e.getMessage());
		}
		if (keys.isEmpty()) {
			throw Refusal.invalidToken("the access token is signed with a key the issuer does not publish at "
					+ properties.jwksUrl() + " (not issued by " + properties.issuer() + ")");
		}
		boolean verified = false;
		for (Key key : keys) {
			try {
				if (jwt.verify(verifierFactory.createJWSVerifier(header, key))) {
					verified = true;
					break;
				}
			} catch (JOSEException e) {
				// a key of the wrong size or type for the algorithm: try the next one
			}
		}
		if (!verified) {
			throw Refusal.invalidToken("the access token's signature is invalid");
		}
		JWTClaimsSet claims;
		try {
			claims = jwt.getJWTClaimsSet();
		} catch (ParseException e) {
			throw Refusal.invalidToken("the access token's claims are not a JSON object");
		}
		if (!properties.issuer().equals(claims.getIssuer())) {
			throw Refusal.invalidToken("the access token was issued by "
					+ (claims.getIssuer() == null ? "nobody (no iss)" : "'" + claims.getIssuer() + "'")
					+ ", not by " + properties.issuer());
		}
		Instant now = Instant.now();
		Date expiry = claims.getExpirationTime();
		if (expiry == null) {
			throw Refusal.invalidToken("the access token has no expiry (exp)");
		}
		if (expiry.toInstant().plusSeconds(LEEWAY_SECONDS).isBefore(now)) {
			throw Refusal.invalidToken("the access token has expired (exp " + expiry.toInstant() + ", "
					+ LEEWAY_SECONDS + " s leeway): get a new one");
		}
		Date notBefore = claims.getNotBeforeTime();
		if (notBefore != null && notBefore.toInstant().minusSeconds(LEEWAY_SECONDS).isAfter(now)) {
			throw Refusal.invalidToken("the access token is not valid before " + notBefore.toInstant());
		}
		Object type = claims.getClaim("typ");
		if (type != null && !"Bearer".equalsIgnoreCase(String.valueOf(type))) {
			throw Refusal.invalidToken("the token is not an access token (typ '" + type + "')");
		}
		return claims;
	}

	/** Writes the refusal as an OperationOutcome (JSON unless XML was asked for); false: stop. */
	private boolean refuse(Refusal refusal, RequestDetails requestDetails, HttpServletRequest request,
			HttpServletResponse response) {
		if (refusal.status >= 500) {
			LOG.warn("SMART: {} {} {}: {}", refusal.status, request.getMethod(), request.getRequestURI(), refusal.getMessage());
		} else {
			LOG.info("SMART: {} {} {}: {}", refusal.status, request.getMethod(), request.getRequestURI(), refusal.getMessage());
		}
		OperationOutcome outcome = new OperationOutcome();
		outcome.addIssue().setSeverity(IssueSeverity.ERROR).setCode(refusal.code).setDiagnostics(refusal.getMessage());
		RestfulServerUtils.ResponseEncoding negotiated =
				RestfulServerUtils.determineResponseEncodingWithDefault(requestDetails);
		EncodingEnum encoding = negotiated == null ? EncodingEnum.JSON : negotiated.getEncoding();
		try {
			String body = encoding.newParser(requestDetails.getFhirContext()).encodeResourceToString(outcome);
			response.setStatus(refusal.status);
			if (refusal.challenge != null) {
				response.setHeader("WWW-Authenticate", refusal.challenge);
			}
			response.setContentType(encoding.getResourceContentTypeNonLegacy());
			response.setCharacterEncoding(StandardCharsets.UTF_8.name());
			response.getWriter().write(body);
			response.getWriter().flush();
		} catch (IOException e) {
			LOG.debug("SMART: could not write the refusal ({})", e.toString());
		}
		return false;
	}

	/** Why a request on the SMART port is not served: status, issue code, diagnostics, challenge. */
	static final class Refusal extends Exception {
		final int status;
		final IssueType code;
		final String challenge;

		Refusal(int status, IssueType code, String challenge, String message) {
			super(message, null, false, false);
			this.status = status;
			this.code = code;
			this.challenge = challenge;
		}

		/** 401; error (RFC 6750) null when the request carried no token at all. */
		static Refusal unauthorized(String error, String message) {
			String challenge = "Bearer realm=\"" + REALM + "\"";
			if (error != null) {
				challenge += ", error=\"" + error + "\", error_description=\"" + headerSafe(message) + "\"";
			}
			return new Refusal(401, IssueType.LOGIN, challenge, message);
		}

		static Refusal invalidToken(String message) {
			return unauthorized("invalid_token", message);
		}

		static Refusal forbidden(String scope, String message) {
			return new Refusal(403, IssueType.FORBIDDEN, "Bearer realm=\"" + REALM
					+ "\", error=\"insufficient_scope\", scope=\"" + scope + "\"", message);
		}

		/** RFC 6750's error_description: printable ASCII without '"' and '\\'. */
		private static String headerSafe(String text) {
			StringBuilder safe = new StringBuilder(text.length());
			for (char c : text.toCharArray()) {
				safe.append(c >= 0x20 && c <= 0x7e && c != '"' && c != '\\' ? c : '?');
			}
			return safe.toString();
		}
	}

	/** The issuer's JWKS: fetched on first use, again on an unknown key (rate-limited) or when old. */
	static final class CachedJwks implements JWKSource<SecurityContext> {
		private final URI url;
		private final HttpClient http = HttpClient.newBuilder()
				.connectTimeout(Duration.ofSeconds(3))
				.followRedirects(HttpClient.Redirect.NEVER)
				.build();
		private volatile JWKSet keys;
		private volatile Instant fetchedAt = Instant.EPOCH;
		private Instant lastAttempt = Instant.EPOCH;

		CachedJwks(URI url) {
			this.url = url;
		}

		@Override
		public List<JWK> get(JWKSelector selector, SecurityContext context) throws KeySourceException {
			JWKSet current = keys;
			if (current == null || fetchedAt.plus(Duration.ofMinutes(JWKS_MAX_AGE_MINUTES)).isBefore(Instant.now())) {
				current = refresh(current);
			}
			List<JWK> found = selector.select(current);
			if (found.isEmpty()) {
				// a key made after we fetched (a restarted development Keycloak has new keys)
				found = selector.select(refresh(current));
			}
			return found;
		}

		/**
		 * The keys fetched again, unless another thread just did or the last attempt was less than
		 * {@value #REFETCH_SECONDS} s ago; on failure the cached keys, or an error when there are none.
		 */
		private synchronized JWKSet refresh(JWKSet seen) throws KeySourceException {
			Instant now = Instant.now();
			if (keys != null && (keys != seen || lastAttempt.plusSeconds(REFETCH_SECONDS).isAfter(now))) {
				return keys;
			}
			lastAttempt = now;
			try {
				HttpResponse<String> response = http.send(
						HttpRequest.newBuilder(url).timeout(Duration.ofSeconds(5)).header("Accept", "application/json")
								.GET().build(),
						HttpResponse.BodyHandlers.ofString());
				if (response.statusCode() != 200) {
					throw new IOException("HTTP " + response.statusCode());
				}
				JWKSet fetched = JWKSet.parse(response.body());
				keys = fetched;
				fetchedAt = now;
				LOG.info("SMART: fetched {} key(s) from {}", fetched.getKeys().size(), url);
				return fetched;
			} catch (IOException | ParseException e) {
				if (keys != null) {
					LOG.warn("SMART: could not fetch the keys from {} ({}); keeping the cached ones", url, e.toString());
					return keys;
				}
				throw new KeySourceException(e.toString(), e);
			} catch (InterruptedException e) {
				Thread.currentThread().interrupt();
				throw new KeySourceException("interrupted", e);
			}
		}
	}
}
