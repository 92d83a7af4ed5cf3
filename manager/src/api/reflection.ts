/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha) for connect-es.
 *
 * Reflection lets generic clients such as grpcurl and `buf curl` discover the
 * services on a port and fetch their schemas, so an operator can call the
 * manager without a copy of berth's .proto files.
 *
 * Protocol: https://github.com/grpc/grpc/blob/master/doc/server-reflection.md
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type {
  DescEnum,
  DescExtension,
  DescFile,
  DescMessage,
  DescService,
  MessageInitShape,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import type { ConnectRouter } from "@connectrpc/connect";
import {
  ServerReflection,
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
} from "@berth/proto/grpc/reflection/v1/reflection_pb.js";
import type {
  ServerReflectionRequest,
  ServerReflectionResponse,
} from "@berth/proto/grpc/reflection/v1/reflection_pb.js";
import {
  ServerReflection as ServerReflectionV1Alpha,
  ServerReflectionRequestSchema as ServerReflectionRequestSchemaV1Alpha,
  ServerReflectionResponseSchema as ServerReflectionResponseSchemaV1Alpha,
} from "@berth/proto/grpc/reflection/v1alpha/reflection_pb.js";

/**
 * Registers `grpc.reflection.v1.ServerReflection` and its predecessor
 * `grpc.reflection.v1alpha.ServerReflection` on `router`.
 *
 * The advertised services (`list_services`) are exactly the services
 * registered on the router, read on every request, so services registered
 * after this call are included too, and nothing is advertised that the server
 * does not route. Register health and the berth services on the same router
 * to have them listed.
 *
 * Every file of a registered service, and all of its imports, can be fetched.
 * `files` adds more files (and their imports) to what can be fetched by name
 * or symbol, without advertising their services.
 */
export function registerReflection(router: ConnectRouter, files: readonly DescFile[] = []): void {
  const reflector = new Reflector(router, files);

  router.service(ServerReflection, {
    serverReflectionInfo: (requests) => reflector.serve(requests),
  });

  // v1alpha is wire-identical to v1 (only the package differs), so requests
  // and responses are re-decoded as the other version and one implementation
  // serves both. Older clients (grpcurl < 1.8.8, many IDE plugins) still only
  // speak v1alpha.
  router.service(ServerReflectionV1Alpha, {
    serverReflectionInfo: async function* (requests) {
      const asV1 = mapAsync(requests, (request) =>
        fromBinary(
          ServerReflectionRequestSchema,
          toBinary(ServerReflectionRequestSchemaV1Alpha, request),
        ),
      );
      for await (const response of reflector.serve(asV1)) {
        yield fromBinary(
          ServerReflectionResponseSchemaV1Alpha,
          toBinary(ServerReflectionResponseSchema, response),
        );
      }
    },
  });
}

/** Thrown by lookups, and turned into an `error_response` on the stream. */
class ReflectionError extends Error {
  constructor(
    readonly code: Code,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Symbol and file lookups over the router's services plus extra files.
 * The index is rebuilt whenever services are added to the router.
 */
class Reflector {
  #index: SymbolIndex | undefined;
  #indexedHandlers = -1;

  constructor(
    private readonly router: ConnectRouter,
    private readonly extraFiles: readonly DescFile[],
  ) {}

  /** Answers each request on a ServerReflectionInfo stream in order. */
  async *serve(
    requests: AsyncIterable<ServerReflectionRequest>,
  ): AsyncGenerator<ServerReflectionResponse> {
    for await (const request of requests) {
      yield this.answer(request);
    }
  }

  answer(request: ServerReflectionRequest): ServerReflectionResponse {
    let messageResponse: MessageInitShape<typeof ServerReflectionResponseSchema>["messageResponse"];
    try {
      messageResponse = this.#dispatch(request);
    } catch (error) {
      if (!(error instanceof ReflectionError)) throw error;
      // Failed lookups are answered in-band so the client can keep using the
      // stream, as grpc-go and grpc-java do.
      messageResponse = {
        case: "errorResponse",
        value: { errorCode: error.code, errorMessage: error.message },
      };
    }
    return create(ServerReflectionResponseSchema, {
      validHost: request.host,
      originalRequest: request,
      messageResponse,
    });
  }

  #dispatch(
    request: ServerReflectionRequest,
  ): MessageInitShape<typeof ServerReflectionResponseSchema>["messageResponse"] {
    const index = this.#currentIndex();
    const { messageRequest } = request;
    switch (messageRequest.case) {
      case "listServices":
        return {
          case: "listServicesResponse",
          value: { service: index.services.map((name) => ({ name })) },
        };
      case "fileByFilename":
        return fileResponse(index.fileByName(messageRequest.value));
      case "fileContainingSymbol":
        return fileResponse(index.fileContainingSymbol(messageRequest.value));
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = messageRequest.value;
        return fileResponse(index.extension(containingType, extensionNumber).file);
      }
      case "allExtensionNumbersOfType": {
        const typeName = messageRequest.value;
        return {
          case: "allExtensionNumbersResponse",
          value: { baseTypeName: typeName, extensionNumber: index.extensionNumbers(typeName) },
        };
      }
      case undefined:
        throw new ReflectionError(Code.InvalidArgument, "empty reflection request");
    }
  }

  #currentIndex(): SymbolIndex {
    const handlers = this.router.handlers;
    if (this.#index === undefined || this.#indexedHandlers !== handlers.length) {
      const services = [...new Set(handlers.map((handler) => handler.service))];
      this.#index = new SymbolIndex(services, this.extraFiles);
      this.#indexedHandlers = handlers.length;
    }
    return this.#index;
  }
}

/**
 * A `file_descriptor_response` holding `file` first, then its transitive
 * imports. Clients need every import to link the file, and sending the whole
 * closure each time (rather than only files not yet sent on this stream, as
 * grpc-go does) keeps every response self-contained.
 */
function fileResponse(
  file: DescFile,
): MessageInitShape<typeof ServerReflectionResponseSchema>["messageResponse"] {
  const closure = new Set<DescFile>();
  const visit = (f: DescFile): void => {
    if (closure.has(f)) return;
    closure.add(f);
    f.dependencies.forEach(visit);
  };
  visit(file);
  return {
    case: "fileDescriptorResponse",
    value: {
      fileDescriptorProto: [...closure].map((f) => toBinary(FileDescriptorProtoSchema, f.proto)),
    },
  };
}

/** Fully-qualified names of everything reachable from a set of files. */
class SymbolIndex {
  /** Advertised service names, sorted. */
  readonly services: string[];
  readonly #files = new Map<string, DescFile>();
  readonly #symbols = new Map<string, DescFile>();
  readonly #messages = new Set<string>();
  /** Extensions by extendee type name, then field number. */
  readonly #extensions = new Map<string, Map<number, DescExtension>>();

  constructor(services: readonly DescService[], extraFiles: readonly DescFile[]) {
    this.services = services.map((s) => s.typeName).sort();
    for (const service of services) this.#addFile(service.file);
    for (const file of extraFiles) this.#addFile(file);
  }

  fileByName(name: string): DescFile {
    const file = this.#files.get(name);
    if (file === undefined) throw new ReflectionError(Code.NotFound, `file not found: ${name}`);
    return file;
  }

  fileContainingSymbol(symbol: string): DescFile {
    const file = this.#symbols.get(symbol);
    if (file === undefined) throw new ReflectionError(Code.NotFound, `symbol not found: ${symbol}`);
    return file;
  }

  extension(extendee: string, fieldNumber: number): DescExtension {
    const extension = this.#extensions.get(extendee)?.get(fieldNumber);
    if (extension === undefined) {
      throw new ReflectionError(
        Code.NotFound,
        `extension not found: ${extendee} field ${fieldNumber}`,
      );
    }
    return extension;
  }

  extensionNumbers(extendee: string): number[] {
    if (!this.#messages.has(extendee)) {
      throw new ReflectionError(Code.NotFound, `message type not found: ${extendee}`);
    }
    return [...(this.#extensions.get(extendee)?.keys() ?? [])].sort((a, b) => a - b);
  }

  #addFile(file: DescFile): void {
    if (this.#files.has(file.proto.name)) return;
    this.#files.set(file.proto.name, file);
    for (const service of file.services) {
      this.#symbols.set(service.typeName, file);
      for (const method of service.methods) {
        this.#symbols.set(`${service.typeName}.${method.name}`, file);
      }
    }
    file.messages.forEach((m) => this.#addMessage(m));
    file.enums.forEach((e) => this.#addEnum(e));
    file.extensions.forEach((x) => this.#addExtension(x));
    file.dependencies.forEach((d) => this.#addFile(d));
  }

  #addMessage(message: DescMessage): void {
    this.#symbols.set(message.typeName, message.file);
    this.#messages.add(message.typeName);
    // Fields and oneofs are symbols too: grpcurl `describe pkg.Msg.field`.
    for (const member of message.members) {
      this.#symbols.set(`${message.typeName}.${member.name}`, message.file);
    }
    message.nestedMessages.forEach((m) => this.#addMessage(m));
    message.nestedEnums.forEach((e) => this.#addEnum(e));
    message.nestedExtensions.forEach((x) => this.#addExtension(x));
  }

  #addEnum(descEnum: DescEnum): void {
    this.#symbols.set(descEnum.typeName, descEnum.file);
    // Protobuf scopes enum values as siblings of their enum, not children:
    // `berth.v1.Protocol.PROTOCOL_TCP` is named `berth.v1.PROTOCOL_TCP`.
    const scope = descEnum.typeName.slice(0, descEnum.typeName.lastIndexOf(".") + 1);
    for (const value of descEnum.values) {
      this.#symbols.set(scope + value.name, descEnum.file);
    }
  }

  #addExtension(extension: DescExtension): void {
    this.#symbols.set(extension.typeName, extension.file);
    const byNumber = this.#extensions.get(extension.extendee.typeName) ?? new Map();
    byNumber.set(extension.number, extension);
    this.#extensions.set(extension.extendee.typeName, byNumber);
  }
}

async function* mapAsync<T, U>(source: AsyncIterable<T>, fn: (item: T) => U): AsyncGenerator<U> {
  for await (const item of source) yield fn(item);
}
